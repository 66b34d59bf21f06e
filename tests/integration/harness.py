"""Running the operator against the test control plane: the CRD, an `slm operator run` process, polling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.crd import crd_manifest

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]


def install_crd(api: client.ApiClient) -> None:
    """Create or replace the generated CRD and wait until it is Established."""
    ext = client.ApiextensionsV1Api(api)
    body = crd_manifest()
    name = body["metadata"]["name"]
    try:
        current = ext.read_custom_resource_definition(name)
        body["metadata"]["resourceVersion"] = current.metadata.resource_version
        ext.replace_custom_resource_definition(name, body)
    except ApiException as exc:
        if exc.status != 404:
            raise
        ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established, what="CRD established", timeout=60)


def eventually(check: Callable[[], T], *, what: str, timeout: float = 60, interval: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail with the last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (ApiException, KeyError, IndexError, TypeError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(process: subprocess.Popen[bytes] | None, grace: float = 20) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; nothing when the process already ended."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


class OperatorProcess:
    """`slm operator run` as a real process, with its log kept for failure reports."""

    def __init__(
        self, kubeconfig: Path, log_path: Path, lease_namespace: str = "default", resync_seconds: float = 2
    ) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.resync_seconds = resync_seconds
        self.metrics_port = free_port()
        self.lease_namespace = lease_namespace
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "SLM_OPERATOR_RESYNC_SECONDS": str(self.resync_seconds),
            "SLM_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "SLM_OPERATOR_NAMESPACE": self.lease_namespace,
        }
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "slm_operator.cli", "--log-level", "INFO", "operator", "run", "--verbose"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def kill(self) -> None:
        """SIGKILL: no cleanup, no lease release (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        stop_process(self.process)

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text


@contextmanager
def running_operator(kubeconfig: Path, log_path: Path) -> Iterator[OperatorProcess]:
    operator = OperatorProcess(kubeconfig, log_path)
    operator.start()
    try:
        yield operator
    finally:
        operator.stop()


class SLMs:
    """CRUD on SLMDeployments in one namespace through the real API."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        body = {**manifest, "metadata": {**manifest["metadata"], "namespace": self.namespace}}
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return result

    def get(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)
        return result

    def patch(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )
        return result

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.get(name).get("status") or {})

    def wait_phase(self, name: str, phase: str, timeout: float = 120) -> dict[str, Any]:
        return eventually(
            lambda: (
                (s := self.status(name)).get("phase") == phase
                and s.get("observedGeneration") == self.get(name)["metadata"]["generation"]
                and s
            ),
            what=f"{name} phase {phase}",
            timeout=timeout,
        )


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "examples" / name).read_text())
    return loaded
