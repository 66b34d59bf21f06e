"""What the real-node test modules share: helpers over kubectl/helm and the API, and a `Stack` (the images, the
chart installed with the operator on the real node, a system and a team namespace) with waits that print the
cluster's state when they time out."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import ollama
import yaml
from harness import ROOT
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from realnode_images import ProjectImages, project_images, split_reference

from cluster import Cluster, WaitTimeoutError, binaries, wait_until
from cluster.realnode import NODE_SELECTOR, TOLERATION, RealNode
from slm_operator.api.resource import GROUP, PLURAL, VERSION

T = TypeVar("T")

CHART = ROOT / "charts" / "slm-operator"
RELEASE = "slm-operator"  # the chart's full name is then the release name
PORT = 11434
FIELD_MANAGER = "gitops"  # kubectl apply --server-side, as Argo CD / Flux apply manifests


def run_tool(argv: list[str], *, kubeconfig: Path, stdin: str | None = None, timeout: float = 180) -> str:
    helm_home = ROOT / ".state" / "helm"  # not the user's repositories and plugins
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "HELM_CACHE_HOME": str(helm_home / "cache"),
        "HELM_CONFIG_HOME": str(helm_home / "config"),
        "HELM_DATA_HOME": str(helm_home / "data"),
    }
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    assert result.returncode == 0, f"{' '.join(argv[:4])} ... failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


def ollama_at(url: str) -> ollama.Client:
    return ollama.Client(host=url, trust_env=False, timeout=120)  # pods are on this machine: never a proxy


def body(data: dict[str, Any]) -> Any:
    """A manifest as the Kubernetes client's create_* calls take it (they serialize dicts as they are)."""
    return data


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def container_status(pod: dict[str, Any], name: str, *, init: bool = False) -> dict[str, Any]:
    key = "initContainerStatuses" if init else "containerStatuses"
    statuses = [s for s in (pod.get("status") or {}).get(key) or [] if s["name"] == name]
    return statuses[0] if statuses else {}


def pod_ready(pod: dict[str, Any]) -> bool:
    return conditions(pod).get("Ready", {}).get("status") == "True" and not pod["metadata"].get("deletionTimestamp")


def create_namespace(api: client.ApiClient, name: str) -> None:
    labels = {
        "slm-operator.io/test": "integration",
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }
    client.CoreV1Api(api).create_namespace(body({"metadata": {"name": name, "labels": labels}}))


def namespace_gone(core: client.CoreV1Api, namespace: str) -> bool:
    try:
        core.read_namespace(namespace)
    except ApiException as error:
        return bool(error.status == 404)
    return False


@dataclass(kw_only=True)
class Stack:
    """What a real-node test module shares: the cluster, the imported images, the operator's release and its
    namespaces."""

    api: client.ApiClient
    kubeconfig: Path
    node: RealNode
    images: ProjectImages
    system: str  # the release's namespace (the operator pod, its Lease)
    team: str  # the namespace the operator watches (the SLMDeployments)
    suffix: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: float = 120) -> str:
        return run_tool([str(binaries().kubectl), *args], kubeconfig=self.kubeconfig, stdin=stdin, timeout=timeout)

    def helm(self, *args: str, timeout: float = 300) -> str:
        return run_tool([str(binaries().helm), *args], kubeconfig=self.kubeconfig, timeout=timeout)

    def apply(self, manifest: dict[str, Any]) -> None:
        """What a GitOps tool does with the manifest in Git: server-side apply under its own field manager."""
        self.kubectl(
            "apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-n", self.team, "-f", "-",
            stdin=yaml.safe_dump(manifest),
        )  # fmt: skip

    def as_dict(self, obj: object) -> dict[str, Any]:
        """A Kubernetes client object as the API's JSON (camelCase keys)."""
        data: dict[str, Any] = self.api.sanitize_for_serialization(obj)
        return data

    def slm(self, name: str) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        return cast(dict[str, Any], custom.get_namespaced_custom_object(GROUP, VERSION, self.team, PLURAL, name))

    def delete_slm(self, name: str) -> None:
        with contextlib.suppress(ApiException):
            client.CustomObjectsApi(self.api).delete_namespaced_custom_object(GROUP, VERSION, self.team, PLURAL, name)

    def pods(self, name: str) -> list[dict[str, Any]]:
        """The pods of one SLMDeployment (terminating ones included), as API dicts."""
        selector = f"app.kubernetes.io/name=slm-runtime,app.kubernetes.io/instance={name}"
        items = self.core.list_namespaced_pod(self.team, label_selector=selector).items
        return [self.api.sanitize_for_serialization(pod) for pod in items]

    def ready_pod(self, name: str) -> dict[str, Any]:
        (pod,) = [p for p in self.pods(name) if pod_ready(p)]
        return pod

    def service_url(self, name: str) -> str:
        ip = self.as_dict(self.core.read_namespaced_service(name, self.team))["spec"]["clusterIP"]
        return f"http://{ip}:{PORT}"

    def operator_pod(self) -> dict[str, Any]:
        selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
        (pod,) = self.core.list_namespaced_pod(self.system, label_selector=selector).items
        result: dict[str, Any] = self.api.sanitize_for_serialization(pod)
        return result

    def logs(self, namespace: str, pod: str, container: str, *extra: str) -> str:
        return self.kubectl("logs", "-n", namespace, pod, "-c", container, *extra)

    def diagnose(self) -> str:
        """SLMDeployments, pods and recent events of the team namespace and the operator's log tail, for failures."""
        lines: list[str] = []
        with contextlib.suppress(Exception):
            custom = client.CustomObjectsApi(self.api)
            listed = cast(dict[str, Any], custom.list_namespaced_custom_object(GROUP, VERSION, self.team, PLURAL))
            for item in listed["items"]:
                status = item.get("status") or {}
                lines.append(f"slm {item['metadata']['name']}: phase={status.get('phase')}")
                lines += [
                    f"  {c['type']}={c['status']} {c['reason']}: {c['message']}" for c in status.get("conditions", [])
                ]
        with contextlib.suppress(Exception):
            for pod in self.core.list_namespaced_pod(self.team).items:
                data = self.api.sanitize_for_serialization(pod)
                states = [
                    f"{s['name']}: {json.dumps(s.get('state'))[:300]} restarts={s.get('restartCount')}"
                    for s in [
                        *(data["status"].get("initContainerStatuses") or []),
                        *(data["status"].get("containerStatuses") or []),
                    ]
                ]
                lines.append(f"pod {data['metadata']['name']} {data['status'].get('phase')} {states}")
        with contextlib.suppress(Exception):
            events = self.core.list_namespaced_event(self.team).items[-25:]
            lines += [f"event {e.involved_object.name}: {e.reason}: {(e.message or '')[:300]}" for e in events]
        with contextlib.suppress(Exception):
            pod = self.operator_pod()["metadata"]["name"]
            lines += ["operator log:", *self.logs(self.system, pod, "operator", "--tail=30").splitlines()]
        return "\n".join(lines)

    def wait(self, what: str, probe: Callable[[], T | None], timeout: float) -> T:
        """wait_until, with transient API errors treated as "not yet" and the cluster's state in the failure."""

        def guarded() -> T | None:
            try:
                return probe()
            except (ApiException, KeyError, ValueError):
                return None

        try:
            return wait_until(what, guarded, timeout, interval=0.5)
        except WaitTimeoutError as error:
            raise WaitTimeoutError(f"{error}\n{self.diagnose()}") from None

    def ready_now(self, name: str) -> dict[str, Any] | None:
        """The SLMDeployment if its status says Ready for its current generation; fails at once when it says
        Failed (a problem that does not fix itself), with its conditions."""
        slm = self.slm(name)
        status = slm.get("status") or {}
        current = status.get("observedGeneration") == slm["metadata"]["generation"]
        if current and status.get("phase") == "Failed":
            conditions = [f"{c['type']}={c['status']} {c['reason']}: {c['message']}" for c in status["conditions"]]
            raise AssertionError(f"{name} is Failed:\n" + "\n".join(conditions))
        return slm if current and status.get("phase") == "Ready" else None

    def ready(self, name: str, timeout: float) -> dict[str, Any]:
        return self.wait(f"{name} Ready", lambda: self.ready_now(name), timeout)

    def rolled_out(self, name: str, replicas: int, timeout: float) -> dict[str, Any]:
        """Ready for the current generation, the Deployment's rollout complete and every old pod gone."""

        def probe() -> dict[str, Any] | None:
            slm = self.ready_now(name)
            if slm is None:
                return None
            deployment = self.as_dict(self.apps.read_namespaced_deployment(name, self.team))
            status = deployment.get("status") or {}
            done = status.get("observedGeneration") == deployment["metadata"]["generation"] and (
                status.get("updatedReplicas") == status.get("readyReplicas") == status.get("replicas") == replicas
            )
            return slm if done and len(self.pods(name)) == replicas else None

        return self.wait(f"{name} rolled out", probe, timeout)


def chart_values(images: ProjectImages, team: str) -> dict[str, Any]:
    """Helm values that run the operator built here on the real node, watching ``team``, with small runtime pods."""
    operator_repository, operator_tag = split_reference(images.operator)
    runtime_repository, runtime_tag = split_reference(images.runtime)
    return {
        "image": {"repository": operator_repository, "tag": operator_tag, "pullPolicy": "IfNotPresent"},
        "watchNamespaces": [team],
        "nodeSelector": dict(NODE_SELECTOR),
        "tolerations": [dict(TOLERATION)],
        "operator": {"verbose": True, "resyncSeconds": 2},
        "settings": {
            "runtimeImage": {"repository": runtime_repository, "tag": runtime_tag},
            "imagePullPolicy": "IfNotPresent",
            "defaultRequests": {"cpu": "100m", "memory": "512Mi"},
            "startupTimeoutSeconds": 60,
        },
    }


def merged(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, mappings key by key (as Helm merges several values files)."""
    out = dict(base)
    for key, value in extra.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@contextlib.contextmanager
def installed_stack(
    real_node: RealNode,
    control_plane: Cluster,
    api: client.ApiClient,
    workdir: Path,
    *,
    prefix: str,
    values: dict[str, Any] | None = None,
    before_install: Callable[[Stack], None] | None = None,
) -> Iterator[Stack]:
    """Images built and imported, a system and a team namespace (restricted PSS), and `helm install` of the chart
    (chart_values() merged with ``values``), waited for. On exit: every SLMDeployment of the team deleted, the
    release uninstalled, both namespaces gone."""
    started = time.monotonic()
    images = project_images(real_node)
    built = time.monotonic()
    suffix = uuid.uuid4().hex[:6]
    system, team = f"{prefix}-system-{suffix}", f"{prefix}-team-{suffix}"
    stack = Stack(
        api=api, kubeconfig=control_plane.kubeconfig, node=real_node, images=images, system=system, team=team,
        suffix=suffix,
    )  # fmt: skip
    stack.timings["images"] = built - started
    core = stack.core
    try:
        create_namespace(api, system)
        create_namespace(api, team)
        if before_install is not None:
            before_install(stack)
        values_file = workdir / f"values-{suffix}.yaml"
        values_file.write_text(yaml.safe_dump(merged(chart_values(images, team), values or {})))
        stack.helm(
            "install", RELEASE, str(CHART), "-n", system, "--values", str(values_file), "--wait", "--timeout", "240s"
        )
        stack.timings["helm install"] = time.monotonic() - built
        yield stack
    finally:
        with contextlib.suppress(ApiException):
            custom = client.CustomObjectsApi(api)
            for item in custom.list_namespaced_custom_object(GROUP, VERSION, team, PLURAL)["items"]:
                stack.delete_slm(item["metadata"]["name"])
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            stack.helm("uninstall", RELEASE, "-n", system, "--wait", "--timeout", "60s")
        for namespace in (team, system):
            with contextlib.suppress(ApiException):
                core.delete_namespace(namespace)
            with contextlib.suppress(ApiException):
                core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)
        for namespace in (team, system):
            with contextlib.suppress(WaitTimeoutError):
                wait_until(f"namespace {namespace} gone", functools.partial(namespace_gone, core, namespace), 120)
