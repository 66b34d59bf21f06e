"""The Helm chart on the real control plane: lint and template clean, a server-side dry run, install, the
operator running as the chart's ServiceAccount (a TokenRequest token) reconciling an example to Ready, RBAC that
is sufficient and minimal (SubjectAccessReviews), upgrade with changed values, uninstall keeping the CRD.

Helm runs as the pinned binary of tests/cluster (hack/cluster/versions.env).
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import ROOT, SLMs, eventually, example, free_port, stop_process
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sandbox import UID, image_env, sandboxed

from cluster import Cluster, binaries, kube, load_versions, wait_until
from slm_gateway.cli import build_parser as gateway_parser
from slm_gateway.cli import settings_from_args as gateway_settings_from_args
from slm_operator.api.resource import GROUP, PLURAL
from slm_operator.settings import load_settings

CHART = ROOT / "charts" / "slm-operator"
CRD_NAME = f"{PLURAL}.{GROUP}"
KUBE_VERSION = load_versions().kubernetes.lstrip("v")
FIELD_MANAGER = "slm-operator-chart-test"  # tells this module's operator's writes from any other operator's
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
ALL_TOGGLES: dict[str, Any] = {
    "monitoring": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "grafanaDashboard": {"enabled": True},
    }
}


# ---------------------------------------------------------------------------------------------------- helpers


def run(command: list[str], *, kubeconfig: Path | None = None, stdin: str | None = None) -> str:
    """Run a command; fail the test with its output when it exits non-zero."""
    helm_home = ROOT / ".state" / "helm"  # not the user's repositories and plugins
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_DATA_HOME": str(helm_home / "data"),
    }
    env.pop("KUBECONFIG", None)
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    result = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, f"{' '.join(command[:3])} ... failed ({result.returncode}):\n{result.stderr}"
    return result.stdout + result.stderr


def helm(*args: str, kubeconfig: Path | None = None) -> str:
    binary = binaries().helm
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: make cluster-bins builds it", pytrace=False)
    return run([str(binary), *args], kubeconfig=kubeconfig)


def kubectl(*args: str, kubeconfig: Path, stdin: str | None = None) -> str:
    return run([str(binaries().kubectl), *args], kubeconfig=kubeconfig, stdin=stdin)


def values_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def template(tmp_path: Path, values: dict[str, Any] | None = None, namespace: str = "slm-system") -> str:
    return helm(
        "template",
        "slm",
        str(CHART),
        "--namespace",
        namespace,
        "--kube-version",
        KUBE_VERSION,
        "--values",
        str(values_file(tmp_path, values or {})),
    )


def documents(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


# ------------------------------------------------------------------------------------------ lint and template


@pytest.mark.parametrize(
    "values",
    [
        {},
        ALL_TOGGLES,
        {"watchNamespaces": ["team-a", "team-b"], **ALL_TOGGLES},
        {"gateway": {"enabled": True, "keys": {"secretName": "keys"}}, **ALL_TOGGLES},
    ],
    ids=["defaults", "monitoring", "namespaced", "gateway"],
)
def test_helm_lint_is_clean(tmp_path: Path, values: dict[str, Any]) -> None:
    output = helm(
        "lint", "--strict", str(CHART), "--kube-version", KUBE_VERSION, "--values", str(values_file(tmp_path, values))
    )
    assert "0 chart(s) failed" in output
    assert not re.search(r"\[(INFO|WARNING|ERROR)\]", output), output


def test_helm_template_is_deterministic_and_complete(tmp_path: Path) -> None:
    first = template(tmp_path, ALL_TOGGLES)
    assert first == template(tmp_path, ALL_TOGGLES)  # GitOps: the same values render the same bytes
    docs = documents(first)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ConfigMap",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
            "ServiceMonitor",
            "PrometheusRule",
        ]
    )
    (deployment,) = by_kind(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["--log-level", "INFO", "operator", "run"]
    assert container["image"] == "slm-operator/operator:0.1.0"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert security["capabilities"] == {"drop": ["ALL"]} and pod["securityContext"]["runAsUser"] == 65532
    assert {p for p in ("startupProbe", "livenessProbe", "readinessProbe") if p in container} == {
        "startupProbe",
        "livenessProbe",
        "readinessProbe",
    }
    env = {e["name"]: e for e in container["env"]}
    assert env["SLM_OPERATOR_CONFIG"]["value"] == "/etc/slm-operator/settings.yaml"
    assert env["SLM_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_settings_configmap_is_what_the_operator_loads(tmp_path: Path) -> None:
    values = {
        "imageRegistry": "registry.example.com/ml",
        "settings": {
            "defaultRequests": {"cpu": "2", "memory": "3Gi"},
            "runtimeImageVariants": {"cuda": "registry.example.com/ml/slm-runtime-cuda:1"},
            "hardwareProfiles": {"nvidia-gpu": {"nodeSelector": {"pool": "l4"}}},
        },
    }
    docs = documents(template(tmp_path, values))
    settings_map = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-settings"))
    path = tmp_path / "settings.yaml"
    path.write_text(settings_map["data"]["settings.yaml"])
    settings = load_settings(path)  # the operator's own loader: unknown keys would be refused here
    assert settings.runtime_image == "registry.example.com/ml/slm-operator/slm-runtime:0.1.0"
    assert settings.default_requests == {"cpu": "2", "memory": "3Gi"}
    gpu = settings.hardware_profiles[next(a for a in settings.hardware_profiles if a.value == "nvidia-gpu")]
    assert gpu.node_selector == {"pool": "l4"} and gpu.resource_name == "nvidia.com/gpu"  # merged onto the default
    assert settings.image_for(gpu) == "registry.example.com/ml/slm-runtime-cuda:1"
    (deployment,) = by_kind(docs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].startswith("registry.example.com/ml/")


def test_namespaced_mode_renders_roles_and_no_cluster_wide_writes(tmp_path: Path) -> None:
    docs = documents(template(tmp_path, {"watchNamespaces": ["team-a", "team-b"]}))
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind(docs, "Role")}
    assert roles == {
        ("team-a", "slm-slm-operator"),
        ("team-b", "slm-slm-operator"),
        ("slm-system", "slm-slm-operator-leader-election"),
    }
    for cluster_role in by_kind(docs, "ClusterRole"):
        verbs = {v for rule in cluster_role["rules"] for v in rule["verbs"]}
        assert verbs <= {"get", "list", "watch"}, cluster_role["metadata"]["name"]
    (deployment,) = by_kind(docs, "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-4:] == ["--namespace", "team-a", "--namespace", "team-b"]


def test_schema_rejects_bad_values(tmp_path: Path) -> None:
    bad = values_file(tmp_path, {"watchNamespaces": ["Not_A_Namespace"], "settings": {"typo": 1}})
    result = subprocess.run(
        [str(binaries().helm), "template", "slm", str(CHART), "--kube-version", KUBE_VERSION, "--values", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "/watchNamespaces/0" in result.stderr and "typo" in result.stderr


# ------------------------------------------------------------------------------------------------ the gateway

GATEWAY = {"gateway": {"enabled": True}}


def _gateway_objects(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "gateway"]


def test_gateway_is_off_by_default_and_renders_a_restricted_deployment_running_slm_gateway(tmp_path: Path) -> None:
    assert _gateway_objects(documents(template(tmp_path))) == []
    values = {
        "gateway": {
            "enabled": True,
            "keys": {"secretName": "gateway-keys"},
            "prefixAffinity": {"enabled": True, "chars": 200},
            "wake": {"mode": "metric", "maxHeld": 7, "timeoutSeconds": 120},
        },
        "monitoring": {"serviceMonitor": {"enabled": True}},
    }
    docs = documents(template(tmp_path, values))
    kinds = sorted(d["kind"] for d in _gateway_objects(docs))
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "Deployment", "Service", "ServiceAccount", "ServiceMonitor"]
    (deployment,) = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "slm-slm-operator-gateway"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "slm-operator/operator:0.1.0" and container["command"] == ["slm-gateway"]
    args = gateway_parser().parse_args(container["args"])  # the gateway's own CLI reads what the chart passes
    settings = gateway_settings_from_args(args)
    assert (settings.host, settings.port, settings.namespaces) == ("0.0.0.0", 11434, ())
    assert settings.prefix_affinity and settings.prefix_chars == 200
    assert (settings.wake.value, settings.max_held, settings.wake_timeout) == ("metric", 7, 120)
    assert str(settings.keys_file) == "/etc/slm-gateway/keys/keys.yaml"
    (keys,) = [v for v in pod["volumes"] if v["name"] == "keys"]
    assert keys["secret"]["secretName"] == "gateway-keys"
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] and not security["allowPrivilegeEscalation"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["serviceAccountName"] == "slm-slm-operator-gateway"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    (service,) = [d for d in by_kind(docs, "Service") if d["metadata"]["name"] == "slm-slm-operator-gateway"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 11434, "targetPort": "http", "protocol": "TCP"}]
    assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "slm-operator"  # scraped like models
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_gateway_rbac_reads_models_and_scales_them_only_in_the_direct_wake_mode(tmp_path: Path) -> None:
    def rules(values: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
        docs = documents(template(tmp_path, values))
        roles = [d for d in _gateway_objects(docs) if d["kind"] in ("Role", "ClusterRole")]
        found: dict[tuple[str, str], set[str]] = {}
        for role in roles:
            for rule in role["rules"]:
                for group in rule["apiGroups"]:
                    for resource in rule["resources"]:
                        found.setdefault((group, resource), set()).update(rule["verbs"])
        return found

    reads = {
        ("slm-operator.io", "slmdeployments"): {"get", "list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    }
    direct = {("apps", "deployments/scale"): {"get", "patch"}, ("keda.sh", "scaledobjects"): {"get", "patch"}}
    assert rules(GATEWAY) == reads | direct
    assert rules({"gateway": {"enabled": True, "wake": {"mode": "metric"}}}) == reads
    namespaced = documents(template(tmp_path, {**GATEWAY, "watchNamespaces": ["team-a", "team-b"]}))
    roles = {(d["kind"], d["metadata"].get("namespace")) for d in _gateway_objects(namespaced) if "Role" in d["kind"]}
    assert roles == {(k, ns) for k in ("Role", "RoleBinding") for ns in ("team-a", "team-b")}
    (deployment,) = [d for d in by_kind(namespaced, "Deployment") if d["metadata"]["name"].endswith("-gateway")]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert gateway_settings_from_args(gateway_parser().parse_args(args)).namespaces == ("team-a", "team-b")
    only = documents(template(tmp_path, {"gateway": {"enabled": True, "namespaces": ["team-c"]}}))
    assert {d["metadata"].get("namespace") for d in _gateway_objects(only) if d["kind"] == "Role"} == {"team-c"}


def test_operator_settings_name_the_gateway_and_prometheus_and_the_operator_may_manage_scaled_objects(
    tmp_path: Path,
) -> None:
    def loaded(values: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
        docs = documents(template(tmp_path, values))
        settings_map = next(d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-settings"))
        path = tmp_path / "settings.yaml"
        path.write_text(settings_map["data"]["settings.yaml"])
        return load_settings(path), docs

    settings, docs = loaded({**GATEWAY, "settings": {"prometheusUrl": "http://prom.monitoring.svc:9090"}})
    assert settings.gateway_service == "slm-system/slm-slm-operator-gateway"
    assert settings.prometheus_url == "http://prom.monitoring.svc:9090"
    (operator_role,) = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "slm-slm-operator"]
    assert {
        "apiGroups": ["keda.sh"],
        "resources": ["scaledobjects"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    } in operator_role["rules"]
    settings, docs = loaded({"rbac": {"keda": False}, "settings": {"gatewayService": "gw/slm-gateway"}})
    assert settings.gateway_service == "gw/slm-gateway"  # a gateway installed some other way
    (operator_role,) = [d for d in by_kind(docs, "ClusterRole") if d["metadata"]["name"] == "slm-slm-operator"]
    assert all("keda.sh" not in rule["apiGroups"] for rule in operator_role["rules"])
    assert loaded({})[0].gateway_service == ""


# -------------------------------------------------------------------------------------------- on the cluster


@dataclass
class Release:
    name: str
    namespace: str  # where the operator, its ServiceAccount and its Lease live
    watched: str  # the namespace it reconciles
    kubeconfig: Path
    crd_existed_before: bool
    notes: str = ""  # what `helm install` printed (NOTES.txt)

    @property
    def fullname(self) -> str:
        return f"{self.name}-slm-operator"

    @property
    def service_account(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.fullname}"


def _create_namespace(api: client.ApiClient, name: str, labels: dict[str, str]) -> None:
    client.CoreV1Api(api).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    wait_until(f"service account {name}/default", lambda: not kube.missing_service_account(api, name), 60)


def _delete_namespace(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise
    wait_until(f"namespace {name} deleted", lambda: kube.namespace_gone(api, name), 120)


def _exists(read: Callable[[], object]) -> bool:
    try:
        read()
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _crd_exists(api: client.ApiClient) -> bool:
    try:
        client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


@pytest.fixture(scope="module")
def release(
    api: client.ApiClient, control_plane: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Release]:
    """The chart installed (and waited for) into a restricted namespace, reconciling one other namespace."""
    suffix = uuid.uuid4().hex[:6]
    rel = Release(
        name=f"chart-{suffix}",
        namespace=f"slm-system-{suffix}",
        watched=f"team-{suffix}",
        kubeconfig=control_plane.kubeconfig,
        crd_existed_before=_crd_exists(api),
    )
    _create_namespace(api, rel.namespace, {**RESTRICTED, "slm-operator.io/test": "integration"})
    _create_namespace(api, rel.watched, {"slm-operator.io/test": "integration"})
    values = {
        "watchNamespaces": [rel.watched],
        "settings": {"fieldManager": FIELD_MANAGER},
        "monitoring": {"grafanaDashboard": {"enabled": True}},  # no Prometheus Operator CRDs on this cluster
    }
    values_path = values_file(tmp_path_factory.mktemp("chart"), values)
    try:
        rel.notes = helm(
            "install", rel.name, str(CHART), "--namespace", rel.namespace, "--values", str(values_path),
            "--wait", "--timeout", "180s",
            kubeconfig=rel.kubeconfig,
        )  # fmt: skip
        yield rel
    finally:
        subprocess.run(
            [str(binaries().helm), "uninstall", rel.name, "--namespace", rel.namespace, "--wait"],
            env={**os.environ, "KUBECONFIG": str(rel.kubeconfig)},
            capture_output=True,
            check=False,
        )
        _delete_namespace(api, rel.watched)
        _delete_namespace(api, rel.namespace)


@pytest.mark.cluster
def test_rendered_chart_passes_server_side_dry_run(tmp_path: Path, control_plane: Cluster, namespace: str) -> None:
    for values in (
        {"monitoring": {"grafanaDashboard": {"enabled": True}}},
        {"watchNamespaces": [namespace]},
        {"watchNamespaces": [namespace], "gateway": {"enabled": True, "keys": {"secretName": "keys"}}},
    ):
        rendered = template(tmp_path, values, namespace=namespace)
        out = kubectl(
            "apply", "--dry-run=server", "-n", namespace, "-f", "-", kubeconfig=control_plane.kubeconfig, stdin=rendered
        )
        applied = [line for line in out.splitlines() if line.endswith("(server dry run)")]
        assert len(applied) == len(documents(rendered)), out
    crds = kubectl(
        "apply", "--dry-run=server", "--server-side", "-f", str(CHART / "crds"), kubeconfig=control_plane.kubeconfig
    )
    assert CRD_NAME in crds


@pytest.mark.cluster
def test_install_runs_a_restricted_operator_pod_and_installs_the_crd(api: client.ApiClient, release: Release) -> None:
    apps = client.AppsV1Api(api)
    deployment = apps.read_namespaced_deployment(release.fullname, release.namespace)
    assert deployment.status.available_replicas == 1  # helm --wait; the namespace enforces `restricted`
    assert _crd_exists(api)
    history = yaml.safe_load(
        helm("history", release.name, "-n", release.namespace, "-o", "yaml", kubeconfig=release.kubeconfig)
    )
    assert [h["status"] for h in history] == ["deployed"]
    rbac = client.RbacAuthorizationV1Api(api)
    assert rbac.read_namespaced_role(release.fullname, release.watched).rules
    with pytest.raises(ApiException) as missing:
        rbac.read_cluster_role(release.fullname)  # namespaced mode: no cluster-wide role with writes
    assert missing.value.status == 404
    assert f"kubectl -n {release.namespace} rollout status deployment/{release.fullname}" in release.notes
    assert f"It reconciles SLMDeployments in: {release.watched} (a Role and RoleBinding in each)." in release.notes
    dashboard = client.CoreV1Api(api).read_namespaced_config_map(f"{release.fullname}-dashboard", release.namespace)
    assert '"uid": "slm-operator"' in dashboard.data["slm-operator.json"]


def _token_kubeconfig(api: client.ApiClient, release: Release, path: Path) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount with a TokenRequest token."""
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600))
    token = (
        client.CoreV1Api(api)
        .create_namespaced_service_account_token(release.fullname, release.namespace, request)
        .status.token
    )
    admin = yaml.safe_load(release.kubeconfig.read_text())
    cluster = dict(admin["clusters"][0]["cluster"])
    if "certificate-authority" in cluster:
        ca = Path(cluster.pop("certificate-authority"))
        if not ca.is_absolute():
            ca = release.kubeconfig.parent / ca
        cluster["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": "operator", "user": {"token": token}}],
        "contexts": [{"name": "operator", "context": {"cluster": "test", "user": "operator"}}],
        "current-context": "operator",
    }
    path.write_text(yaml.safe_dump(document))
    path.chmod(0o600)
    return path


class ChartOperator:
    """`slm operator run` as the chart's Deployment runs it: the container's args and environment, the settings
    ConfigMap as its file, the ServiceAccount's token (TokenRequest) instead of the mounted one, and the pod's
    filesystem: uid 65532 on a read-only root with only /tmp writable (tests/integration/sandbox.py)."""

    def __init__(self, api: client.ApiClient, release: Release, workdir: Path) -> None:
        deployment = client.AppsV1Api(api).read_namespaced_deployment(release.fullname, release.namespace)
        pod = deployment.spec.template.spec
        container = pod.containers[0]
        assert container.security_context.read_only_root_filesystem and pod.security_context.run_as_user == UID
        assert [m.mount_path for m in container.volume_mounts] == ["/etc/slm-operator", "/tmp"]
        self.args: list[str] = list(container.args)
        self.container_env = {e.name: e.value for e in container.env if e.value is not None}
        settings = client.CoreV1Api(api).read_namespaced_config_map(f"{release.fullname}-settings", release.namespace)
        self.settings = settings.data["settings.yaml"]
        self.kubeconfig = _token_kubeconfig(api, release, workdir / "operator.kubeconfig")
        self.workdir = workdir
        self.log_path = workdir / "operator.log"
        self.metrics_port = free_port()
        self.namespace = release.namespace
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **image_env(ROOT / "operator" / "Dockerfile"),  # what the image starts with
            **self.container_env,
            "SLM_OPERATOR_CONFIG": "/tmp/settings.yaml",  # the chart mounts the ConfigMap at /etc/slm-operator
            "SLM_OPERATOR_NAMESPACE": self.namespace,  # the chart's fieldRef
            "SLM_OPERATOR_METRICS_PORT": str(self.metrics_port),  # host network here: a free port
            "SLM_OPERATOR_RESYNC_SECONDS": "2",
            "KUBECONFIG": "/tmp/kubeconfig",  # stands in for the mounted ServiceAccount token
        }
        entrypoint = str(Path(sys.executable).parent / "slm")  # the image's ENTRYPOINT
        command, sandbox_env = sandboxed(
            [[entrypoint, *self.args, "--verbose"]],
            env,
            self.workdir,
            files={"kubeconfig": self.kubeconfig.read_text(), "settings.yaml": self.settings},
        )
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=sandbox_env, stdout=log, stderr=subprocess.STDOUT, cwd="/")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until /healthz answers 200 (the operator leads); fails at once, with the log, if the process died."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, (
                f"the operator exited:\n{self.log()[-3000:]}"
            )
            try:
                if httpx.get(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (
                f"the operator did not lead within {timeout:.0f}s:\n{self.log()[-3000:]}"
            )
            time.sleep(0.5)

    def stop(self) -> None:
        stop_process(self.process)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


def assert_never_refused(log: str) -> None:
    """No 403 from the apiserver and no degraded kopf mode for lack of permissions in the operator's log."""
    for refusal in ("Forbidden", "forbidden", "Not enough permissions"):
        assert refusal not in log, f"the operator was refused something:\n{log[-4000:]}"
    assert "Handler 'on_spec' succeeded" in log


@pytest.mark.cluster
def test_operator_as_the_chart_service_account_reconciles_an_example_to_ready(
    api: client.ApiClient, release: Release, tmp_path: Path
) -> None:
    operator = ChartOperator(api, release, tmp_path)
    assert operator.args[-2:] == ["--namespace", release.watched]
    with kube.api_client(operator.kubeconfig) as as_operator:
        review = client.AuthenticationV1Api(as_operator).create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == release.service_account
    operator.start()
    try:
        operator.wait_ready()
        slms = SLMs(api, release.watched)
        slms.create(example("gemma3-270m.yaml"))
        status = slms.wait_phase("gemma3-270m", "Ready", timeout=180)
        assert status["readyReplicas"] == 1
        assert status["endpoint"] == f"http://gemma3-270m.{release.watched}.svc:11434"
        deployment = client.AppsV1Api(api).read_namespaced_deployment("gemma3-270m", release.watched)
        managers = {(m.manager, m.operation) for m in deployment.metadata.managed_fields}
        assert (FIELD_MANAGER, "Apply") in managers  # written by this operator, with the chart's settings
        lease = client.CoordinationV1Api(api).read_namespaced_lease("slm-operator-leader", release.namespace)
        assert lease.spec.holder_identity
        writes = eventually(
            lambda: [
                line for line in operator.metrics().splitlines() if line.startswith("slm_operator_api_writes_total")
            ],
            what="operator metrics",
        )
        assert any('kind="Deployment"' in line for line in writes)
        events = client.CoreV1Api(api).list_namespaced_event(release.watched).items
        assert any(e.reason == "Ready" and e.involved_object.kind == "SLMDeployment" for e in events)
        # Deletion while the operator runs goes through (any finalizer of kopf is released with the allowed patch).
        slms.delete("gemma3-270m")
        eventually(lambda: not _exists(lambda: slms.get("gemma3-270m")), what="SLMDeployment deleted", timeout=60)
    finally:
        operator.stop()
    assert_never_refused(operator.log())


def _allowed(api: client.ApiClient, user: str, verb: str, resource: str, namespace: str | None, name: str = "") -> bool:
    """A SubjectAccessReview; ``resource`` as kubectl spells it: plural[.group][/subresource]."""
    qualified, _, subresource = resource.partition("/")
    plural, _, group = qualified.partition(".")
    attributes = client.V1ResourceAttributes(
        verb=verb,
        group=group,
        resource=plural,
        subresource=subresource or None,
        namespace=namespace,
        name=name or None,
    )
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=user, resource_attributes=attributes)
    )
    return bool(client.AuthorizationV1Api(api).create_subject_access_review(review).status.allowed)


SLMD = f"{PLURAL}.{GROUP}"


@pytest.mark.cluster
def test_service_account_rbac_is_sufficient_and_minimal(api: client.ApiClient, release: Release) -> None:
    sa, ns, home = release.service_account, release.watched, release.namespace
    needed = [
        ("watch", SLMD, ns),
        ("patch", SLMD, ns),  # kopf's annotations
        ("patch", f"{SLMD}/status", ns),
        ("create", "deployments.apps", ns),  # server-side apply of a new object
        ("patch", "deployments.apps", ns),
        ("delete", "horizontalpodautoscalers.autoscaling", ns),
        ("create", "poddisruptionbudgets.policy", ns),
        ("patch", "networkpolicies.networking.k8s.io", ns),
        ("create", "services", ns),
        ("patch", "persistentvolumeclaims", ns),
        ("list", "pods", ns),
        ("create", "events", ns),
        ("watch", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("create", "leases.coordination.k8s.io", home),
    ]
    missing = [(v, r, n) for v, r, n in needed if not _allowed(api, sa, v, r, n)]
    assert missing == [], f"the ServiceAccount lacks what the operator does: {missing}"
    assert _allowed(api, sa, "update", "leases.coordination.k8s.io", home, "slm-operator-leader")
    refused = [
        ("list", "secrets", None),  # no Secrets anywhere: API keys reach pods through secretKeyRef
        ("get", "secrets", ns),
        ("list", "secrets", home),
        ("patch", "nodes", None),
        ("get", "nodes", None),
        ("create", "pods", ns),  # pods come from Deployments
        ("create", "pods/exec", ns),
        ("delete", "pods", ns),
        ("delete", SLMD, ns),  # users own SLMDeployments
        ("update", SLMD, ns),
        ("create", SLMD, ns),
        ("create", "deployments.apps", "default"),  # not a watched namespace
        ("list", "pods", "default"),
        ("watch", SLMD, None),  # nothing cluster-wide in namespaced mode
        ("create", "roles.rbac.authorization.k8s.io", ns),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", None),
        ("deletecollection", "deployments.apps", ns),
        ("update", "deployments.apps", ns),
        ("create", "serviceaccounts/token", home),
        ("patch", "customresourcedefinitions.apiextensions.k8s.io", None),
        ("list", "configmaps", home),
        ("delete", "leases.coordination.k8s.io", home),
    ]
    granted = [(v, r, n) for v, r, n in refused if _allowed(api, sa, v, r, n)]
    assert granted == [], f"the ServiceAccount may do more than it needs: {granted}"
    assert not _allowed(api, sa, "update", "leases.coordination.k8s.io", home, "someone-elses-lease")
    assert not _allowed(api, sa, "update", "leases.coordination.k8s.io", "kube-system", "slm-operator-leader")


@pytest.mark.cluster
def test_upgrade_with_changed_values_then_uninstall_keeps_the_crd(
    api: client.ApiClient, control_plane: Cluster, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:6]
    name, home = f"upgrade-{suffix}", f"slm-upgrade-{suffix}"
    _create_namespace(api, home, {**RESTRICTED, "slm-operator.io/test": "integration"})
    apps, rbac, core = client.AppsV1Api(api), client.RbacAuthorizationV1Api(api), client.CoreV1Api(api)
    fullname = f"{name}-slm-operator"
    sa = f"system:serviceaccount:{home}:{fullname}"
    kubeconfig = control_plane.kubeconfig
    try:
        helm(
            "install", name, str(CHART), "-n", home, "--wait", "--timeout", "180s",
            "--values", str(values_file(tmp_path, {"watchNamespaces": [home]})),
            kubeconfig=kubeconfig,
        )  # fmt: skip
        before = apps.read_namespaced_deployment(fullname, home).spec.template
        assert not _allowed(api, sa, "list", "pods", "default")
        crd_uid = client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME).metadata.uid

        changed = {
            "settings": {"defaultRequests": {"cpu": "250m", "memory": "256Mi"}},
            "operator": {"logLevel": "DEBUG"},
        }
        helm(
            "upgrade", name, str(CHART), "-n", home, "--wait", "--timeout", "180s",
            "--values", str(values_file(tmp_path, changed)),
            kubeconfig=kubeconfig,
        )  # fmt: skip
        after = apps.read_namespaced_deployment(fullname, home).spec.template
        assert after.metadata.annotations["checksum/settings"] != before.metadata.annotations["checksum/settings"]
        assert after.spec.containers[0].args == ["--log-level", "DEBUG", "operator", "run"]  # now cluster-wide
        settings = yaml.safe_load(core.read_namespaced_config_map(f"{fullname}-settings", home).data["settings.yaml"])
        assert settings["defaultRequests"] == {"cpu": "250m", "memory": "256Mi"}
        assert rbac.read_cluster_role(fullname).rules  # namespaced -> cluster-wide RBAC
        with pytest.raises(ApiException) as gone:
            rbac.read_namespaced_role(fullname, home)
        assert gone.value.status == 404
        assert _allowed(api, sa, "list", "pods", "default")
        assert not _allowed(api, sa, "list", "secrets", None)
        wait_until(
            "upgraded operator available",
            lambda: apps.read_namespaced_deployment(fullname, home).status.available_replicas == 1,
            120,
        )

        # The cluster-wide RBAC is sufficient as well, and the upgraded settings reach what the operator renders:
        # an example without spec.resources gets the new defaultRequests.
        team = f"team-upgrade-{suffix}"
        _create_namespace(api, team, {"slm-operator.io/test": "integration"})
        operator = ChartOperator(api, Release(name, home, team, kubeconfig, crd_existed_before=True), tmp_path)
        assert "--namespace" not in operator.args
        manifest = example("gemma3-270m.yaml")
        del manifest["spec"]["resources"]
        operator.start()
        try:
            operator.wait_ready()
            slms = SLMs(api, team)
            slms.create(manifest)
            slms.wait_phase("gemma3-270m", "Ready", timeout=180)
            deployment = apps.read_namespaced_deployment("gemma3-270m", team)
            assert deployment.spec.template.spec.containers[0].resources.requests == {"cpu": "250m", "memory": "256Mi"}
            slms.delete("gemma3-270m")
            eventually(lambda: not _exists(lambda: slms.get("gemma3-270m")), what="SLMDeployment deleted", timeout=60)
        finally:
            operator.stop()
            _delete_namespace(api, team)
        assert_never_refused(operator.log())

        helm("uninstall", name, "-n", home, "--wait", kubeconfig=kubeconfig)
        # Helm never deletes (nor replaces) what it installed from crds/: the very same object is still there.
        assert client.ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME).metadata.uid == crd_uid
        for read in (
            lambda: apps.read_namespaced_deployment(fullname, home),
            lambda: rbac.read_cluster_role(fullname),
            lambda: rbac.read_cluster_role_binding(f"{fullname}-discovery"),
            lambda: core.read_namespaced_service_account(fullname, home),
        ):
            with pytest.raises(ApiException) as deleted:
                read()
            assert deleted.value.status == 404
    finally:
        subprocess.run(
            [str(binaries().helm), "uninstall", name, "-n", home],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            capture_output=True,
            check=False,
        )
        _delete_namespace(api, home)
