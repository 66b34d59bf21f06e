"""The real node (tests/cluster/realnode.py): a kubelet with containerd, runc and a CNI bridge joins the test
control plane beside the kwok nodes, runs pods that only tests asking for it place there, routes Service
traffic through kube-proxy, and leaves the machine as it found it when it stops.

The workload is hack/cluster/images/testserver (a static Go HTTP server in a FROM-scratch image built by
tests/cluster/images.py), so these tests need no project image and no registry.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client

from cluster import Cluster, binaries, load_versions, wait_until
from cluster.images import http_image
from cluster.network import NODE_IP, POD_CIDR, SERVICE_CIDR
from cluster.processes import pid_alive
from cluster.realnode import (
    BRIDGE,
    NODE_LABEL,
    NODE_NAME,
    NODE_SELECTOR,
    RUN_DIR,
    TAINT,
    TOLERATION,
    RealNode,
    RealNodeError,
    _run,
    leftovers,
)

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(600)]

NONROOT = 65532
SERVICE_ACCOUNT_CA = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"


def _get(url: str, timeout: float = 5.0) -> httpx.Response:
    return httpx.get(url, timeout=timeout, trust_env=False)  # never through a proxy: pods are on this machine


def _answer(url: str) -> str | None:
    """The body of a 200 answer from `url`, or None while it does not answer yet."""
    try:
        response = _get(url, timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.text if response.status_code == 200 else None


def _kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries().kubectl), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _restricted_container(name: str, image: str, args: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
        **extra,
    }


def _web_pod(image: str, labels: dict[str, str]) -> client.V1Pod:
    """An init container fills an emptyDir; the server answers with its content once /readyz passes."""
    spec = {
        "nodeSelector": NODE_SELECTOR,
        "tolerations": [TOLERATION],
        "terminationGracePeriodSeconds": 5,
        "securityContext": {
            "runAsUser": NONROOT,
            "runAsGroup": NONROOT,
            "runAsNonRoot": True,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "initContainers": [_restricted_container("init", image, ["write", "/data/message", "hello from init"])],
        "containers": [
            _restricted_container(
                "web",
                image,
                ["serve", ":8080", "/data/message"],
                ports=[{"name": "http", "containerPort": 8080}],
                readinessProbe={"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
            )
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    pod = client.V1Pod.from_dict({"metadata": {"name": "web", "labels": labels}, "spec": spec})
    assert pod is not None
    return pod


def _pod_ready(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    conditions = (pod.status.conditions if pod.status else None) or []
    return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None


def _pod_events(core: client.CoreV1Api, namespace: str) -> str:
    events = core.list_namespaced_event(namespace).items
    return "\n".join(f"{e.reason}: {e.message}" for e in events)


def test_the_node_registers_ready_with_its_label_and_taint(real_node: RealNode, api: client.ApiClient) -> None:
    node = client.CoreV1Api(api).read_node(NODE_NAME)
    assert node.metadata is not None and node.spec is not None and node.status is not None
    assert (node.metadata.labels or {})[NODE_LABEL] == "true"
    assert [t.to_dict() for t in node.spec.taints or []] == [{**TAINT, "time_added": None}]
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
    addresses = {a.type: a.address for a in node.status.addresses or []}
    assert addresses["InternalIP"] == NODE_IP
    assert node.status.node_info is not None
    assert node.status.node_info.container_runtime_version.startswith("containerd://")
    assert node.status.node_info.kubelet_version == load_versions().kubernetes


def test_a_pod_without_the_toleration_stays_off_the_real_node(
    real_node: RealNode, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    pod = client.V1Pod.from_dict(
        {
            "metadata": {"name": "no-toleration"},
            "spec": {"nodeSelector": NODE_SELECTOR, "containers": [{"name": "main", "image": "unused.invalid/x"}]},
        }
    )
    assert pod is not None
    core.create_namespaced_pod(namespace, pod)

    def unschedulable() -> bool:
        status = core.read_namespaced_pod("no-toleration", namespace).status
        conditions = (status.conditions if status else None) or []
        return any(c.type == "PodScheduled" and c.reason == "Unschedulable" for c in conditions)

    wait_until("the scheduler to give up on the tainted node", unschedulable, 30)
    spec = core.read_namespaced_pod("no-toleration", namespace).spec
    assert spec is not None and spec.node_name is None


def test_a_pod_runs_and_answers_on_its_ip_and_through_its_service(
    real_node: RealNode, api: client.ApiClient, namespace: str, control_plane: Cluster
) -> None:
    core = client.CoreV1Api(api)
    image = http_image()
    assert real_node.import_image(image.archive) == [image.reference]
    assert real_node.import_image(image.archive) == [image.reference]  # idempotent: nothing to do again
    labels = {"app": "web"}
    started = time.monotonic()
    core.create_namespaced_pod(namespace, _web_pod(image.reference, labels))
    service = client.V1Service.from_dict(
        {"metadata": {"name": "web"}, "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]}}
    )
    assert service is not None
    core.create_namespaced_service(namespace, service)
    try:
        pod = wait_until("the pod to be Ready", lambda: _pod_ready(core, namespace, "web"), 90)
    except AssertionError as error:
        raise AssertionError(f"{error}\nevents:\n{_pod_events(core, namespace)}") from None
    print(f"pod Ready {time.monotonic() - started:.1f}s after create")
    assert pod.spec is not None and pod.status is not None
    assert pod.spec.node_name == NODE_NAME
    ip = pod.status.pod_ip
    assert ip is not None and ip.startswith(POD_CIDR.rsplit(".", 1)[0] + ".")

    # On the pod IP from the host: the init container's file, the uid and the read-only root.
    assert _get(f"http://{ip}:8080/").text == "hello from init from web\n"
    assert _get(f"http://{ip}:8080/whoami").text.startswith(
        f"uid={NONROOT} gid={NONROOT} root=read-only: open /.probe: read-only file system"
    )

    # Through the Service's ClusterIP, DNATed by kube-proxy to the pod.
    cluster_ip = core.read_namespaced_service("web", namespace).spec.cluster_ip  # type: ignore[union-attr]
    assert cluster_ip.startswith(SERVICE_CIDR.rsplit(".", 1)[0] + ".")
    body = wait_until("the ClusterIP to answer", lambda: _answer(f"http://{cluster_ip}/"), 30)
    assert body == "hello from init from web\n"

    # kubectl logs and exec go through the apiserver to the kubelet.
    kubeconfig = control_plane.kubeconfig
    logs = _kubectl(kubeconfig, "logs", "-n", namespace, "web", "-c", "web")
    assert logs.returncode == 0, logs.stderr
    assert "serving /data/message on :8080" in logs.stdout
    init_logs = _kubectl(kubeconfig, "logs", "-n", namespace, "web", "-c", "init")
    assert "wrote 15 bytes to /data/message" in init_logs.stdout, init_logs.stderr
    exec_version = _kubectl(kubeconfig, "exec", "-n", namespace, "web", "-c", "web", "--", "/testserver", "version")
    assert exec_version.returncode == 0 and exec_version.stdout.strip() == "slm-testserver 1", exec_version.stderr

    # From inside the pod: its own Service (hairpin through kube-proxy), and the apiserver at the
    # `kubernetes` Service's ClusterIP, verified with the service-account CA (what the operator pod needs).
    hairpin = _kubectl(kubeconfig, "exec", "-n", namespace, "web", "--", "/testserver", "get", f"http://{cluster_ip}/")
    assert hairpin.stdout == "hello from init from web\n", hairpin.stderr
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip  # type: ignore[union-attr]
    version = _kubectl(
        kubeconfig, "exec", "-n", namespace, "web", "--",
        "/testserver", "get", f"https://{kubernetes_ip}/version", SERVICE_ACCOUNT_CA,
    )  # fmt: skip
    assert version.returncode == 0, version.stderr
    assert json.loads(version.stdout)["gitVersion"].startswith("v1.")


def test_stopping_the_node_leaves_nothing_behind(real_node: RealNode, api: client.ApiClient, namespace: str) -> None:
    """Stop the session's node with a pod running on it, check the machine, then start it again."""
    core = client.CoreV1Api(api)
    image = http_image()
    real_node.import_image(image.archive)
    core.create_namespaced_pod(namespace, _web_pod(image.reference, {"app": "web"}))
    wait_until("the pod to be Ready", lambda: _pod_ready(core, namespace, "web"), 90)
    baseline = json.loads((RUN_DIR / "claim.json").read_text(encoding="utf-8"))
    netns_before = sorted(Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else []
    assert list((RUN_DIR / "containerd").rglob("netns/cni-*")), "the pod's network namespace lives under RUN_DIR"

    real_node.stop()
    try:
        assert leftovers((real_node.containerd_root, real_node.dir)) == []
        assert not (Path("/sys/class/net") / BRIDGE).exists()
        netns_after = sorted(Path("/run/netns").glob("*")) if Path("/run/netns").is_dir() else []
        assert netns_after == netns_before
        for name, value in baseline["sysctls"].items():
            assert (Path("/proc/sys") / name).read_text(encoding="utf-8").strip() == value, name
        for command in ("iptables", "ip6tables"):
            for table, rules in (baseline["iptables"].get(command) or {}).items():
                now = subprocess.run([command, "-w", "5", "-t", table, "-S"], capture_output=True, text=True)
                assert sorted(now.stdout.splitlines()) == sorted(rules), f"{command} -t {table}"
        assert core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={NODE_NAME}").items == []
    finally:
        real_node.start(claim_timeout=60)  # later tests in this session still have their node
    assert wait_until("the node to be Ready again", lambda: real_node.running(), 5)


def test_a_command_that_hangs_fails_like_any_failed_command() -> None:
    """Cleanup goes on past a command that hangs (containerd restarted on a killed session's state once held
    `ctr version` past its timeout, and the exception failed every real-node test of a CI run); a required
    step says what hung."""
    hung = _run(["sleep", "30"], check=False, timeout=0.2)
    assert hung.returncode != 0 and "timed out after 0.2s" in hung.stderr
    with pytest.raises(RealNodeError, match=r"sleep 30 failed .*timed out after 0\.2s"):
        _run(["sleep", "30"], timeout=0.2)


def test_a_node_left_behind_by_a_killed_session_is_cleaned_up_by_the_next(
    real_node: RealNode, api: client.ApiClient, namespace: str, tmp_path: Path
) -> None:
    """A test session killed mid-run (a CI run after a stopped session, another checkout's `make test`) leaves
    its components dead, its pod's containers and shims running and its claim on the machine. The next
    session's start cleans that up from the dead session's files, and its own node serves the pod again."""
    core = client.CoreV1Api(api)
    image = http_image()
    real_node.import_image(image.archive)
    core.create_namespaced_pod(namespace, _web_pod(image.reference, {"app": "web"}))
    wait_until("the pod to be Ready", lambda: _pod_ready(core, namespace, "web"), 90)
    left_running = [int(entry.split()[1]) for entry in leftovers() if entry.startswith("process ")]
    assert left_running, "the pod's shim and processes run"

    # The session dies: its components are killed without a teardown, and its claim names a state directory
    # (here a copy of what the teardown reads) whose processes are gone.
    for process in real_node.processes.values():
        pid = process.pid()
        if pid is not None:
            os.killpg(pid, signal.SIGKILL)
    wait_until("the components to die", lambda: not any(p.running() for p in real_node.processes.values()), 30)
    dead_session = tmp_path / "killed-session"
    (dead_session / "realnode").mkdir(parents=True)
    shutil.copy(real_node.dir / "containerd.toml", dead_session / "realnode" / "containerd.toml")
    finished = subprocess.Popen(["true"])
    finished.wait()
    claim = json.loads((RUN_DIR / "claim.json").read_text(encoding="utf-8"))
    claim.update(state_dir=str(dead_session), pid=finished.pid)
    (RUN_DIR / "claim.json").write_text(json.dumps(claim), encoding="utf-8")

    try:
        real_node.start(claim_timeout=60)
    finally:
        if not real_node.running():
            real_node.start(claim_timeout=60)  # later tests in this session still have their node
    assert real_node.claimed()
    assert [pid for pid in left_running if pid_alive(pid)] == []
    ready = wait_until("the pod to be Ready on the new node", lambda: _pod_ready(core, namespace, "web"), 90)
    assert ready.status is not None
    answer = wait_until("the pod to answer", lambda: _answer(f"http://{ready.status.pod_ip}:8080/"), 30)
    assert answer == "hello from init from web\n"
