"""The operator on the real control plane: kwok nodes run the pods, kube-controller-manager the GC."""

from __future__ import annotations

import asyncio
import copy
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from harness import OperatorProcess, SLMs, eventually, example, install_crd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster import Cluster, binaries
from slm_operator.controller import handlers
from slm_operator.controller.cache import Cache
from slm_operator.controller.compact import Kept
from slm_operator.controller.kube import ApiConnection
from slm_operator.controller.watch import Watcher

pytestmark = pytest.mark.cluster

GEMMA = "gemma3-270m.yaml"
SELECTOR = "app.kubernetes.io/managed-by=slm-operator,app.kubernetes.io/instance={name}"


@pytest.fixture(scope="module")
def operator(
    api: client.ApiClient, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crd(api)
    # A namespace of its own for the leader Lease, so operators of other test modules never hold it.
    lease_namespace = f"slm-operator-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=lease_namespace)))
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    process = OperatorProcess(control_plane.kubeconfig, log_path, lease_namespace=lease_namespace)
    process.start()
    yield process
    process.stop()
    core.delete_namespace(lease_namespace)
    sys.stderr.write(f"\n--- operator log tail ({process.log_path}) ---\n{process.log_tail(40)}\n")


@pytest.fixture
def slms(api: client.ApiClient, namespace: str, operator: OperatorProcess) -> SLMs:
    return SLMs(api, namespace)


def gemma(**spec: Any) -> dict[str, Any]:
    manifest = copy.deepcopy(example(GEMMA))
    manifest["spec"].update(spec)
    return manifest


def pods(api: client.ApiClient, namespace: str, name: str) -> list[client.V1Pod]:
    items: list[client.V1Pod] = (
        client.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=SELECTOR.format(name=name)).items
    )
    return [p for p in items if p.metadata.deletion_timestamp is None]


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def test_create_reaches_ready_with_deployment_service_and_endpoint(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma())
    status = slms.wait_phase("gemma3-270m", "Ready")
    assert status["endpoint"] == f"http://gemma3-270m.{slms.namespace}.svc:11434"
    assert status["readyReplicas"] == 1 and status["hardware"]["active"] == "cpu"
    assert status["model"]["digest"] == "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "True" and conditions["Ready"]["lastTransitionTime"]
    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment("gemma3-270m", slms.namespace)
    assert deployment.metadata.owner_references[0].kind == "SLMDeployment"
    service = client.CoreV1Api(api).read_namespaced_service("gemma3-270m", slms.namespace)
    assert service.spec.ports[0].port == 11434
    (pod,) = pods(api, slms.namespace, "gemma3-270m")
    assert ready(pod) and pod.spec.node_name
    # no finalizer: SLMDeployments stay deletable while the operator is not running
    assert not slms.get("gemma3-270m")["metadata"].get("finalizers")
    assert pod.spec.init_containers[0].args[0] == "pull"
    events = client.CoreV1Api(api).list_namespaced_event(slms.namespace).items
    assert any(e.reason == "Ready" and e.involved_object.kind == "SLMDeployment" for e in events)


def test_gpu_pods_land_on_the_gpu_node(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma(hardware={"accelerator": "nvidia-gpu", "count": 1}))
    slms.wait_phase("gemma3-270m", "Ready")
    (pod,) = pods(api, slms.namespace, "gemma3-270m")
    assert pod.spec.node_name == "slm-nvidia-gpu-0"
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"


def test_unschedulable_gpu_falls_back_to_cpu(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma(hardware={"accelerator": "nvidia-gpu", "count": 16, "fallback": ["cpu"], "fallbackAfter": "4s"}))
    status = slms.wait_phase("gemma3-270m", "Ready", timeout=120)
    assert status["hardware"]["active"] == "cpu"
    assert status["hardware"]["reason"] == "nvidia-gpu unschedulable for 4s; running on cpu"
    fallback = next(c for c in status["conditions"] if c["type"] == "HardwareFallback")
    assert (fallback["status"], fallback["reason"]) == ("True", "FellBack")
    (pod,) = pods(api, slms.namespace, "gemma3-270m")
    assert "nvidia.com/gpu" not in (pod.spec.containers[0].resources.limits or {})
    events = client.CoreV1Api(api).list_namespaced_event(slms.namespace).items
    assert any(e.reason == "HardwareFallback" for e in events)


def test_model_change_rolls_out_with_the_new_digest(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma())
    slms.wait_phase("gemma3-270m", "Ready")
    apps = client.AppsV1Api(api)
    before = apps.read_namespaced_deployment("gemma3-270m", slms.namespace).metadata.generation
    new_digest = "b" * 64
    slms.patch("gemma3-270m", {"model": {"source": "https://models.example.com/g.gguf", "sha256": new_digest}})
    status = slms.wait_phase("gemma3-270m", "Ready")
    assert status["model"] == {"source": "https://models.example.com/g.gguf", "digest": f"sha256:{new_digest}"}
    deployment = apps.read_namespaced_deployment("gemma3-270m", slms.namespace)
    assert deployment.metadata.generation > before
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    (pod,) = eventually(lambda: (p := pods(api, slms.namespace, "gemma3-270m")) and len(p) == 1 and p, what="1 pod")
    assert "https://models.example.com/g.gguf" in pod.spec.init_containers[0].args


def test_kubectl_scale_uses_the_scale_subresource(api: client.ApiClient, slms: SLMs, control_plane: Cluster) -> None:
    slms.create(gemma())
    slms.wait_phase("gemma3-270m", "Ready")
    kubectl = binaries().kubectl
    command = [str(kubectl), "--kubeconfig", str(control_plane.kubeconfig), "-n", slms.namespace]
    subprocess.run([*command, "scale", "slm", "gemma3-270m", "--replicas=3"], check=True, capture_output=True)
    status = slms.wait_phase("gemma3-270m", "Ready")
    eventually(lambda: slms.status("gemma3-270m").get("readyReplicas") == 3, what="3 ready replicas")
    assert status["selector"] == "app.kubernetes.io/instance=gemma3-270m,app.kubernetes.io/name=slm-runtime"
    assert client.AppsV1Api(api).read_namespaced_deployment("gemma3-270m", slms.namespace).spec.replicas == 3
    assert client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("gemma3-270m", slms.namespace)


def test_autoscaling_adds_an_hpa_that_owns_replicas_and_removal_deletes_it(api: client.ApiClient, slms: SLMs) -> None:
    # CPU: an HPA of the operator's own whether or not KEDA is installed (in-flight targets render a KEDA
    # ScaledObject where it is, and the metrics pipeline of the real-node tests installs it in the same session).
    slms.create(gemma(autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetCPUUtilization": 70}))
    slms.wait_phase("gemma3-270m", "Ready")
    scaling = client.AutoscalingV2Api(api)
    hpa = scaling.read_namespaced_horizontal_pod_autoscaler("gemma3-270m", slms.namespace)
    assert hpa.spec.max_replicas == 4
    deployment = client.AppsV1Api(api).read_namespaced_deployment("gemma3-270m", slms.namespace)
    ours = [m for m in deployment.metadata.managed_fields if m.manager == "slm-operator"]
    assert ours and all("f:replicas" not in (m.fields_v1 or {}).get("f:spec", {}) for m in ours)
    slms.patch("gemma3-270m", {"autoscaling": {"enabled": False}})

    def hpa_gone() -> bool:
        try:
            scaling.read_namespaced_horizontal_pod_autoscaler("gemma3-270m", slms.namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(hpa_gone, what="HPA deleted")


def test_hand_deleted_service_comes_back(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma())
    slms.wait_phase("gemma3-270m", "Ready")
    core = client.CoreV1Api(api)
    first_uid = core.read_namespaced_service("gemma3-270m", slms.namespace).metadata.uid
    core.delete_namespaced_service("gemma3-270m", slms.namespace)
    restored = eventually(
        lambda: (s := core.read_namespaced_service("gemma3-270m", slms.namespace)).metadata.uid != first_uid and s,
        what="service restored",
    )
    assert restored.spec.ports[0].port == 11434


def test_hand_edited_deployment_is_restored(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma())
    slms.wait_phase("gemma3-270m", "Ready")
    apps = client.AppsV1Api(api)
    apps.patch_namespaced_deployment("gemma3-270m", slms.namespace, {"spec": {"replicas": 4}})
    eventually(
        lambda: apps.read_namespaced_deployment("gemma3-270m", slms.namespace).spec.replicas == 1,
        what="replicas restored to 1",
    )


def test_delete_garbage_collects_everything(api: client.ApiClient, slms: SLMs) -> None:
    slms.create(gemma(replicas=2))
    slms.wait_phase("gemma3-270m", "Ready")
    slms.delete("gemma3-270m")
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    eventually(lambda: not apps.list_namespaced_deployment(slms.namespace).items, what="deployment collected")
    eventually(lambda: not core.list_namespaced_service(slms.namespace).items, what="service collected")
    eventually(lambda: not pods(api, slms.namespace, "gemma3-270m"), what="pods gone")
    assert not client.PolicyV1Api(api).list_namespaced_pod_disruption_budget(slms.namespace).items


def test_restricted_namespace_admits_the_pods(api: client.ApiClient, slms: SLMs) -> None:
    client.CoreV1Api(api).patch_namespace(
        slms.namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    slms.create(gemma())
    slms.wait_phase("gemma3-270m", "Ready")
    events = client.CoreV1Api(api).list_namespaced_event(slms.namespace).items
    assert not [e for e in events if e.reason == "FailedCreate"]


def test_invalid_spec_the_crd_cannot_reject_is_reported(slms: SLMs) -> None:
    slms.create(gemma(model={"source": "ollama://Not_Valid"}))
    status = slms.wait_phase("gemma3-270m", "Failed")
    ready_condition = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready_condition["reason"] == "InvalidSpec"
    assert "spec.model.source" in ready_condition["message"]


_SERIES = re.compile(r"^apiserver_request_total\{([^}]*)\} (\S+)$", re.MULTILINE)
_LABEL = re.compile(r'(\w+)="([^"]*)"')
# What the operator writes: its own objects and SLMDeployment status. Status writes of Deployments and
# ReplicaSets belong to kube-controller-manager and are left out; Events are counted in the test's namespace
# (every component posts them, and earlier tests' namespaces may still receive retried ones).
_OPERATOR_WRITES = {
    ("slmdeployments", ""),
    ("slmdeployments", "status"),
    ("deployments", ""),
    ("services", ""),
    ("horizontalpodautoscalers", ""),
    ("poddisruptionbudgets", ""),
    ("networkpolicies", ""),
    ("persistentvolumeclaims", ""),
}


def _apiserver_writes(api: client.ApiClient) -> dict[str, int]:
    """Write requests the apiserver has served, by resource[/subresource], from its own /metrics."""
    method, url, headers, body, _ = api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    response = api.call_api(method, url, header_params=headers, body=body)
    response.read()
    writes: dict[str, int] = {}
    for labels_text, value in _SERIES.findall(response.data.decode()):
        labels = dict(_LABEL.findall(labels_text))
        key = (labels.get("resource", ""), labels.get("subresource", ""))
        if labels.get("verb") in ("POST", "PUT", "PATCH", "DELETE", "APPLY") and key in _OPERATOR_WRITES:
            name = "/".join(part for part in key if part)
            writes[name] = writes.get(name, 0) + int(float(value))
    return writes


def test_steady_state_sends_no_writes(api: client.ApiClient, slms: SLMs, operator: OperatorProcess) -> None:
    slms.create(gemma(replicas=2))
    slms.wait_phase("gemma3-270m", "Ready")
    eventually(lambda: slms.status("gemma3-270m").get("readyReplicas") == 2, what="2 ready")
    time.sleep(5)  # let the last status patch and events land
    core = client.CoreV1Api(api)
    events_before = sum(e.count or 1 for e in core.list_namespaced_event(slms.namespace).items)
    before = _apiserver_writes(api)
    time.sleep(8)  # four resync periods of 2 s
    after = _apiserver_writes(api)
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)} == {}
    assert sum(e.count or 1 for e in core.list_namespaced_event(slms.namespace).items) == events_before
    assert "slm_operator_reconciles_total" in operator.metrics()


def test_operator_killed_mid_reconcile_converges_on_restart(slms: SLMs, operator: OperatorProcess) -> None:
    slms.create(gemma(replicas=2))
    time.sleep(0.3)
    operator.kill()
    operator.start()
    slms.wait_phase("gemma3-270m", "Ready", timeout=120)


def test_a_second_replica_waits_for_the_lease_and_takes_over(
    api: client.ApiClient, slms: SLMs, operator: OperatorProcess, tmp_path: Path
) -> None:
    standby = OperatorProcess(operator.kubeconfig, tmp_path / "standby.log", lease_namespace=operator.lease_namespace)
    standby.start()
    try:
        eventually(lambda: "waiting for the leader lease" in standby.log_tail(), what="standby waiting", timeout=60)
        slms.create(gemma())
        slms.wait_phase("gemma3-270m", "Ready")
        operator.stop()  # a graceful stop releases the lease at once
        eventually(lambda: "acquired the leader lease" in standby.log_tail(), what="standby leading", timeout=60)
        second = gemma()
        second["metadata"]["name"] = "second"
        slms.create(second)
        slms.wait_phase("second", "Ready")
    finally:
        standby.stop()
        operator.start()


def test_status_follows_the_owned_deployment_without_waiting_for_a_resync(
    slms: SLMs, operator: OperatorProcess, tmp_path: Path
) -> None:
    """With a resync period of ten minutes, an SLMDeployment still turns Ready as soon as its pods do: the
    operator watches the Deployments it owns (its create handler alone leaves the phase at Progressing)."""
    operator.stop()
    slow = OperatorProcess(
        operator.kubeconfig, tmp_path / "slow.log", lease_namespace=operator.lease_namespace, resync_seconds=600
    )
    slow.start()
    try:
        slms.create(gemma(replicas=2))
        slms.wait_phase("gemma3-270m", "Ready", timeout=60)
        eventually(lambda: slms.status("gemma3-270m").get("readyReplicas") == 2, what="2 ready", timeout=30)
    finally:
        slow.stop()
        operator.start()


def test_one_hundred_slmdeployments_reach_ready(slms: SLMs) -> None:
    names = [f"model-{i:03d}" for i in range(100)]
    for name in names:  # small requests: the simulated nodes' CPUs, not the operator, would be the limit
        manifest = gemma(resources={"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}})
        manifest["metadata"]["name"] = name
        slms.create(manifest)

    def not_ready() -> list[str]:
        items = slms.custom.list_namespaced_custom_object(
            "slm-operator.io", "v1alpha1", slms.namespace, "slmdeployments"
        )
        return [i["metadata"]["name"] for i in items["items"] if (i.get("status") or {}).get("phase") != "Ready"]

    eventually(lambda: not not_ready(), what="100 SLMDeployments Ready", timeout=600, interval=3)


def test_own_watch_lists_then_follows_creates_label_moves_and_deletes(api: client.ApiClient, namespace: str) -> None:
    """The operator's own watch of an owned kind (controller/watch.py) on the real apiserver: its first listing
    (in pages) fills the cache, then each event changes one record (an expired watch: tests/unit's test_cache)."""
    core = client.CoreV1Api(api)

    def service(name: str, instance: str) -> client.V1Service:
        labels = {"app.kubernetes.io/managed-by": "slm-operator", "app.kubernetes.io/instance": instance}
        spec = client.V1ServiceSpec(ports=[client.V1ServicePort(port=80)], selector={"app": name})
        return client.V1Service(metadata=client.V1ObjectMeta(name=name, labels=labels), spec=spec)

    for i in range(3):  # more than a page of 2
        core.create_namespaced_service(namespace, service(f"listed-{i}", "first"))

    async def scenario() -> None:
        cache: Cache[Kept] = Cache()
        seen: list[str] = []
        watched = handlers.WATCHED["owned_service"]
        connection = ApiConnection(api.configuration)
        watcher = Watcher(
            connection, watched, cache, namespace=namespace, on_change=lambda e, k, r: seen.append(e), page=2
        )
        session = connection.session(0, aiohttp.ClientTimeout(total=None))
        task = asyncio.get_running_loop().create_task(watcher.run(session))

        async def until(check: Callable[[], bool], what: str) -> None:
            for _ in range(200):
                if check():
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"timed out waiting for {what}; cache {list(cache.keys())}, events {seen}")

        try:
            await asyncio.wait_for(watcher.ready.wait(), 30)
            first = cache.get((namespace, "first"))
            assert sorted(kept.name for kept in first) == ["listed-0", "listed-1", "listed-2"]
            # listed items carry their kind (list items have none; drift comparisons look at it)
            assert first[0].body()["kind"] == "Service" and first[0].body()["apiVersion"] == "v1"
            await asyncio.to_thread(core.create_namespaced_service, namespace, service("later", "second"))
            await until(lambda: [k.name for k in cache.get((namespace, "second"))] == ["later"], "the create")
            patch = {"metadata": {"labels": {"app.kubernetes.io/instance": "second"}}}
            await asyncio.to_thread(core.patch_namespaced_service, "listed-0", namespace, patch)
            await until(lambda: len(cache.get((namespace, "second"))) == 2, "the label move")
            await asyncio.to_thread(core.delete_namespaced_service, "listed-1", namespace)
            await until(lambda: [k.name for k in cache.get((namespace, "first"))] == ["listed-2"], "the delete")
            assert watcher.lists == 1 and "DELETED" in seen
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await session.close()

    asyncio.run(scenario())
