"""The test control plane is a real Kubernetes: controllers, scheduler, admission, GC and server-side apply
all behave as they do in a production cluster, on kwok nodes shaped by the operator's hardware profiles."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster import TEST_NODES, Cluster, TestNode, binaries, load_versions, wait_until
from cluster.nodes import taints_for
from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

IMAGE = "registry.invalid/slm-test/pause:1"  # kwok never pulls images
DEVICE_NODES = [node for node in TEST_NODES if node.profile.resource_name]
UNTAINTED_NODES = {node.name for node in TEST_NODES if not taints_for(node.profile)}


def _node(accelerator: Accelerator) -> TestNode:
    return next(node for node in TEST_NODES if node.accelerator is accelerator)


def _container(resources: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": "main", "image": IMAGE, "resources": resources or {}, **extra}


def _pod(name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> client.V1Pod:
    pod = client.V1Pod.from_dict(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": spec}
    )
    assert pod is not None
    return pod


def _condition(pod: client.V1Pod, kind: str) -> client.V1PodCondition | None:
    conditions = pod.status.conditions if pod.status else None
    return next((c for c in conditions or [] if c.type == kind), None)


def _ready_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod:
    def probe() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, namespace)
        ready = _condition(pod, "Ready")
        return pod if ready is not None and ready.status == "True" else None

    return wait_until(f"pod {namespace}/{name} Ready", probe, 60)


def _unschedulable(core: client.CoreV1Api, namespace: str, name: str) -> client.V1PodCondition:
    def probe() -> client.V1PodCondition | None:
        scheduled = _condition(core.read_namespaced_pod(name, namespace), "PodScheduled")
        ok = scheduled is not None and scheduled.status == "False" and scheduled.reason == "Unschedulable"
        return scheduled if ok else None

    return wait_until(f"pod {namespace}/{name} Unschedulable", probe, 60)


def _gone(read: Any, *args: str) -> bool:
    try:
        read(*args)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


# ---- the simulated nodes ---------------------------------------------------------------------------------


def test_nodes_carry_the_hardware_profiles_labels_taints_and_resources(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    for expected in TEST_NODES:
        node = core.read_node(expected.name)
        assert node.metadata and node.metadata.labels is not None and node.status and node.spec
        profile = DEFAULT_PROFILES[expected.accelerator]
        assert profile.node_selector.items() <= node.metadata.labels.items()
        assert _condition_status(node, "Ready") == "True"
        allocatable = node.status.allocatable or {}
        assert allocatable["cpu"] == expected.cpu and allocatable["memory"] == expected.memory
        if profile.resource_name:
            assert allocatable[profile.resource_name] == str(expected.devices)
        taints = {(t.key, t.effect) for t in node.spec.taints or []}
        assert taints == {(t["key"], t["effect"]) for t in taints_for(profile)}
    cpu_nodes = [n for n in TEST_NODES if n.accelerator is Accelerator.CPU]
    assert len(cpu_nodes) == 2


def _condition_status(node: client.V1Node, kind: str) -> str | None:
    conditions = node.status.conditions if node.status else None
    return next((c.status for c in conditions or [] if c.type == kind), None)


def test_kubectl_and_helm_match_the_pinned_versions(control_plane: Cluster) -> None:
    bins, versions = binaries(), load_versions()
    kubectl = [str(bins.kubectl), f"--kubeconfig={control_plane.kubeconfig}"]
    version = json.loads(subprocess.run([*kubectl, "version", "-o", "json"], check=True, capture_output=True).stdout)
    assert version["serverVersion"]["gitVersion"] == versions.kubernetes
    assert version["clientVersion"]["gitVersion"] == versions.kubernetes
    nodes = json.loads(subprocess.run([*kubectl, "get", "nodes", "-o", "json"], check=True, capture_output=True).stdout)
    assert {item["metadata"]["name"] for item in nodes["items"]} >= {node.name for node in TEST_NODES}
    helm = subprocess.run([str(bins.helm), "version", "--short"], check=True, capture_output=True, text=True)
    assert helm.stdout.startswith(versions.helm)


# ---- controllers and scheduler ---------------------------------------------------------------------------


def test_deployment_creates_replicaset_and_pods_that_kwok_marks_ready(api: client.ApiClient, namespace: str) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "web"}
    deployment = client.V1Deployment.from_dict(
        {
            "metadata": {"name": "web", "labels": labels},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [_container({"requests": {"cpu": "100m", "memory": "64Mi"}})]},
                },
            },
        }
    )
    assert deployment is not None
    created = apps.create_namespaced_deployment(namespace, deployment)
    assert created.metadata is not None

    def rolled_out() -> bool:
        status = apps.read_namespaced_deployment("web", namespace).status
        return status is not None and status.ready_replicas == 2 and status.available_replicas == 2

    wait_until("deployment web to have 2 ready replicas", rolled_out, 90)

    replica_sets = apps.list_namespaced_replica_set(namespace, label_selector="app=web").items
    assert len(replica_sets) == 1
    rs = replica_sets[0]
    assert rs.metadata and rs.metadata.owner_references
    owner = rs.metadata.owner_references[0]
    assert (owner.kind, owner.name, owner.uid, owner.controller) == ("Deployment", "web", created.metadata.uid, True)

    pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
    assert len(pods) == 2
    for pod in pods:
        assert pod.metadata and pod.metadata.owner_references and pod.spec and pod.status
        assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        assert pod.metadata.owner_references[0].uid == rs.metadata.uid
        assert pod.spec.node_name in UNTAINTED_NODES, "a plain CPU pod must avoid the tainted GPU nodes"
        assert pod.status.phase == "Running"
        assert pod.status.pod_ip and pod.status.pod_ip.startswith("10.244.")
        ready = _condition(pod, "Ready")
        assert ready is not None and ready.status == "True"


@pytest.mark.parametrize("node", DEVICE_NODES, ids=[node.accelerator.value for node in DEVICE_NODES])
def test_device_pod_lands_only_on_the_node_with_that_resource(
    api: client.ApiClient, namespace: str, node: TestNode
) -> None:
    core = client.CoreV1Api(api)
    profile = node.profile
    assert profile.resource_name is not None
    spec = {
        "containers": [_container({"limits": {profile.resource_name: "1"}})],
        "tolerations": [dict(t) for t in profile.tolerations],
    }
    core.create_namespaced_pod(namespace, _pod("device", spec))
    pod = _ready_pod(core, namespace, "device")
    assert pod.spec is not None
    assert pod.spec.node_name == node.name


def test_gpu_pod_stays_pending_when_no_gpu_node_fits(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    gpu = _node(Accelerator.NVIDIA_GPU)
    profile = gpu.profile
    assert profile.resource_name == "nvidia.com/gpu"
    tolerations = [dict(t) for t in profile.tolerations]

    too_many = {"containers": [_container({"limits": {"nvidia.com/gpu": str(gpu.devices + 1)}})]}
    core.create_namespaced_pod(namespace, _pod("too-many-gpus", {**too_many, "tolerations": tolerations}))
    scheduled = _unschedulable(core, namespace, "too-many-gpus")
    assert "Insufficient nvidia.com/gpu" in (scheduled.message or "")

    # One GPU fits on the GPU node, but without the profile's toleration the node's taint keeps it out.
    untolerated = {"containers": [_container({"limits": {"nvidia.com/gpu": "1"}})]}
    core.create_namespaced_pod(namespace, _pod("no-toleration", untolerated))
    scheduled = _unschedulable(core, namespace, "no-toleration")
    assert "untolerated taint" in (scheduled.message or "")

    time.sleep(2)  # the scheduler retries; neither pod may have been bound meanwhile
    for name in ("too-many-gpus", "no-toleration"):
        pod = core.read_namespaced_pod(name, namespace)
        assert pod.spec is not None and pod.status is not None
        assert pod.spec.node_name is None and pod.status.phase == "Pending"


# ---- admission ------------------------------------------------------------------------------------------


def test_restricted_pod_security_rejects_privileged_and_admits_compliant_pods(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})

    privileged = {"containers": [_container(securityContext={"privileged": True})]}
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, _pod("privileged", privileged))
    assert rejected.value.status == 403
    message = json.loads(rejected.value.body or "{}").get("message", "")
    assert 'violates PodSecurity "restricted:latest"' in message
    assert 'privileged (container "main" must not set securityContext.privileged=true)' in message

    restricted_context = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "runAsUser": 65532,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    compliant = {"containers": [_container(securityContext=restricted_context)]}
    core.create_namespaced_pod(namespace, _pod("compliant", compliant))
    _ready_pod(core, namespace, "compliant")


# ---- garbage collection ----------------------------------------------------------------------------------


def test_deleting_an_owner_garbage_collects_its_dependents(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"), data={"role": "owner"})
    )
    assert owner.metadata is not None and owner.metadata.uid
    reference = client.V1OwnerReference(api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid)
    core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="child", owner_references=[reference]))
    )
    pod = _pod("child-pod", {"containers": [_container()]})
    assert pod.metadata is not None
    pod.metadata.owner_references = [reference]
    core.create_namespaced_pod(namespace, pod)
    _ready_pod(core, namespace, "child-pod")

    core.delete_namespaced_config_map("owner", namespace, propagation_policy="Background")
    wait_until(
        "dependents of the deleted owner to be collected",
        lambda: (
            _gone(core.read_namespaced_config_map, "child", namespace)
            and _gone(core.read_namespaced_pod, "child-pod", namespace)
        ),
        60,
    )


def test_foreground_deletion_of_a_deployment_removes_replicasets_and_pods(
    api: client.ApiClient, namespace: str
) -> None:
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    labels = {"app": "gc"}
    deployment = client.V1Deployment.from_dict(
        {
            "metadata": {"name": "gc"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [_container()]}},
            },
        }
    )
    assert deployment is not None
    apps.create_namespaced_deployment(namespace, deployment)
    wait_until("one gc pod", lambda: core.list_namespaced_pod(namespace, label_selector="app=gc").items, 60)

    apps.delete_namespaced_deployment("gc", namespace, propagation_policy="Foreground")
    wait_until(
        "deployment, replicaset and pods to be gone",
        lambda: (
            _gone(apps.read_namespaced_deployment, "gc", namespace)
            and not apps.list_namespaced_replica_set(namespace).items
            and not core.list_namespaced_pod(namespace, label_selector="app=gc").items
        ),
        90,
    )


# ---- server-side apply -----------------------------------------------------------------------------------


def _apply_config_map(
    core: client.CoreV1Api, namespace: str, data: dict[str, str], manager: str, *, force: bool = False
) -> client.V1ConfigMap:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": data}
    return core.patch_namespaced_config_map(
        "applied",
        namespace,
        body,
        field_manager=manager,
        force=force,
        _content_type="application/apply-patch+yaml",
    )


def _managers(config_map: client.V1ConfigMap) -> dict[str, str]:
    assert config_map.metadata is not None
    return {str(entry.manager): str(entry.operation) for entry in config_map.metadata.managed_fields or []}


def test_server_side_apply_with_a_field_manager(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)

    applied = _apply_config_map(core, namespace, {"model": "gemma3", "replicas": "1"}, "slm-operator")
    assert applied.data == {"model": "gemma3", "replicas": "1"}
    assert _managers(applied) == {"slm-operator": "Apply"}

    # Another manager may add its own field, but not take one the operator owns without forcing.
    shared = _apply_config_map(core, namespace, {"owner": "gitops"}, "gitops")
    assert shared.data == {"model": "gemma3", "replicas": "1", "owner": "gitops"}
    with pytest.raises(ApiException) as conflict:
        _apply_config_map(core, namespace, {"owner": "gitops", "replicas": "3"}, "gitops")
    assert conflict.value.status == 409
    assert "conflict" in str(conflict.value.body).lower()

    forced = _apply_config_map(core, namespace, {"owner": "gitops", "replicas": "3"}, "gitops", force=True)
    assert forced.data == {"model": "gemma3", "replicas": "3", "owner": "gitops"}

    # The operator re-applies without the field it lost; the value the other manager now owns stays.
    reapplied = _apply_config_map(core, namespace, {"model": "qwen2.5"}, "slm-operator")
    assert reapplied.data == {"model": "qwen2.5", "replicas": "3", "owner": "gitops"}
    assert _managers(reapplied) == {"slm-operator": "Apply", "gitops": "Apply"}


# ---- authentication and RBAC -----------------------------------------------------------------------------


def _client_for_token(admin: client.ApiClient, token: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = admin.configuration.host
    configuration.ssl_ca_cert = admin.configuration.ssl_ca_cert
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return client.ApiClient(configuration)


def test_rbac_governs_what_a_service_account_token_may_do(api: client.ApiClient, namespace: str) -> None:
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="app")))
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))
    issued = core.create_namespaced_service_account_token("app", namespace, request)
    assert issued.status is not None and issued.status.token

    as_app = client.CoreV1Api(_client_for_token(api, issued.status.token))
    try:
        with pytest.raises(ApiException) as forbidden:
            as_app.list_namespaced_config_map(namespace)
        assert forbidden.value.status == 403
        assert f"system:serviceaccount:{namespace}:app" in str(forbidden.value.body)

        role = client.V1Role.from_dict(
            {
                "metadata": {"name": "read-config"},
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}],
            }
        )
        binding = client.V1RoleBinding.from_dict(
            {
                "metadata": {"name": "app-reads-config"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-config"},
                "subjects": [{"kind": "ServiceAccount", "name": "app", "namespace": namespace}],
            }
        )
        assert role is not None and binding is not None
        rbac.create_namespaced_role(namespace, role)
        rbac.create_namespaced_role_binding(namespace, binding)

        def allowed() -> bool:
            try:
                as_app.list_namespaced_config_map(namespace)
            except ApiException as error:
                if error.status == 403:
                    return False
                raise
            return True

        wait_until("the role binding to take effect", allowed, 30)
        with pytest.raises(ApiException) as still_forbidden:
            as_app.list_node()
        assert still_forbidden.value.status == 403
    finally:
        as_app.api_client.close()
