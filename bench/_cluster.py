"""Shared pieces of the cluster benchmarks: the test control plane (tests/cluster) with an audit log of the
operator's requests, an identity of its own for the operator, the operator as a process, and the audit log
read back as requests.

The control plane is ``cluster.ControlPlane`` with three benchmark-only changes, all made here and nowhere in
tests/cluster:

- kube-apiserver writes an audit log (JSON lines, level Metadata) of every request made by the operator's
  service account and of nothing else, so the operator's requests are counted exactly, by verb and resource;
- the service CIDR is a /16 instead of the tests' /24, whose ~250 ClusterIPs cannot hold 500 Services;
- extra kwok CPU nodes (110 pods each) so that hundreds of one-replica SLMDeployments fit.

The client rate limits of kube-controller-manager and kube-scheduler are explicit flags (``cluster.ClientLimits``):
the benchmark runs with Kubernetes' defaults and with a raised setting.

``AsyncKube`` is the bare client of the baseline: server-side apply over one aiohttp session, nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import math
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(REPO_ROOT / "tests"))  # tests/ holds the `cluster` package

from cluster import ClientLimits, ControlPlane, TestNode, kube  # noqa: E402
from cluster.processes import Process, free_ports  # noqa: E402
from slm_operator.api.enums import Accelerator  # noqa: E402
from slm_operator.controller import kube as kube_paths  # noqa: E402

__all__ = [
    "OPERATOR_NAMESPACE",
    "OPERATOR_USER",
    "REPO_ROOT",
    "AsyncKube",
    "AuditedControlPlane",
    "BenchOperator",
    "Request",
    "audit_requests",
    "cpu_nodes_for",
    "write_operator_kubeconfig",
]

Progress = Callable[[str], None]

OPERATOR_NAMESPACE = "slm-bench-system"
OPERATOR_ACCOUNT = "slm-operator"
OPERATOR_USER = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
SERVICE_CIDR = "10.0.0.0/16"  # first address 10.0.0.1, as in the tests' /24 (the apiserver cert's SAN)
PODS_PER_NODE = 110
_AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata", "users": [OPERATOR_USER]}, {"level": "None"}],
}


@dataclass(frozen=True)
class _WithExtraArgs(Process):
    """A control-plane component started with extra flags appended (for pflag the last value of a flag wins)."""

    extra: tuple[str, ...] = ()

    def start(self, argv: list[str], cwd: Path | None = None, *, die_with_parent: bool = False) -> int:
        return super().start([*argv, *self.extra], cwd, die_with_parent=die_with_parent)


def cpu_nodes_for(pods: int) -> tuple[TestNode, ...]:
    """Extra kwok CPU nodes so that `pods` small pods fit beside the test nodes (two CPU nodes already)."""
    extra = max(0, math.ceil(pods * 1.2 / PODS_PER_NODE) - 2)
    return tuple(TestNode(f"slm-bench-cpu-{i}", Accelerator.CPU, cpu="64", memory="256Gi") for i in range(extra))


class AuditedControlPlane(ControlPlane):
    """The test control plane plus an audit log of the operator's requests, a /16 service CIDR and extra nodes.

    Its components die with this Python process (``attached``), so a killed benchmark leaves none behind."""

    def __init__(
        self,
        state_dir: Path,
        extra_nodes: tuple[TestNode, ...],
        progress: Progress,
        client_limits: ClientLimits | None = None,
    ) -> None:
        super().__init__(state_dir, progress=progress, attached=True, client_limits=client_limits)
        self.extra_nodes = extra_nodes
        audit = (
            f"--audit-policy-file={self.audit_policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-mode=blocking",
        )
        cidr = f"--service-cluster-ip-range={SERVICE_CIDR}"
        self.processes["kube-apiserver"] = _WithExtraArgs("kube-apiserver", self.state_dir, (*audit, cidr))
        self.processes["kube-controller-manager"] = _WithExtraArgs("kube-controller-manager", self.state_dir, (cidr,))

    @property
    def audit_policy(self) -> Path:
        return self.state_dir / "audit" / "policy.yaml"

    @property
    def audit_log(self) -> Path:
        return self.state_dir / "audit" / "audit.log"

    def start(self, timeout: float = 300.0) -> None:
        self.audit_policy.parent.mkdir(parents=True, exist_ok=True)
        self.audit_policy.write_text(yaml.safe_dump(_AUDIT_POLICY, sort_keys=False), encoding="utf-8")
        self.audit_log.unlink(missing_ok=True)
        super().start(timeout)
        if not self.extra_nodes:
            return
        self.progress(f"adding {len(self.extra_nodes)} kwok CPU nodes for the large counts")
        deadline = time.monotonic() + timeout
        with kube.api_client(self.kubeconfig) as api:
            for node in self.extra_nodes:
                kube.create_node(api, node)
            self._poll("extra kwok nodes Ready", deadline, lambda: kube.unready_nodes(api, self.extra_nodes))


def _ignore_conflict(create: Callable[[], object]) -> None:
    try:
        create()
    except ApiException as error:
        if error.status != 409:
            raise


def write_operator_kubeconfig(api: client.ApiClient, admin_kubeconfig: Path, path: Path) -> Path:
    """A kubeconfig for the operator's own service account (bound to cluster-admin), whose requests the audit
    policy logs; the benchmark itself keeps the admin identity, which is not logged."""
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    meta = client.V1ObjectMeta
    _ignore_conflict(lambda: core.create_namespace(client.V1Namespace(metadata=meta(name=OPERATOR_NAMESPACE))))
    account = client.V1ServiceAccount(metadata=meta(name=OPERATOR_ACCOUNT))
    _ignore_conflict(lambda: core.create_namespaced_service_account(OPERATOR_NAMESPACE, account))
    binding = client.V1ClusterRoleBinding(
        metadata=meta(name="slm-bench-operator"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="ClusterRole", name="cluster-admin"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name=OPERATOR_ACCOUNT, namespace=OPERATOR_NAMESPACE)],
    )
    _ignore_conflict(lambda: rbac.create_cluster_role_binding(binding))
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=86400)
    )
    status = core.create_namespaced_service_account_token(OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, request).status
    if status is None or not status.token:
        raise RuntimeError(f"no token for {OPERATOR_USER}")
    admin = yaml.safe_load(admin_kubeconfig.read_text(encoding="utf-8"))
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": OPERATOR_ACCOUNT, "user": {"token": status.token}}],
        "contexts": [
            {"name": OPERATOR_ACCOUNT, "context": {"cluster": admin["clusters"][0]["name"], "user": "slm-operator"}}
        ],
        "current-context": OPERATOR_ACCOUNT,
    }
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)
    return path


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL from the kernel when the benchmark dies. Not SIGTERM: with the
    control plane dying too, the operator's cleanup handler (Lease release) fails and kopf retries it for
    a minute or more before the process exits."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class BenchOperator:
    """`slm operator run` as its own process (own session, dies with the benchmark), log and temp files in
    `work_dir`."""

    def __init__(self, kubeconfig: Path, work_dir: Path, lease_name: str, resync_seconds: float) -> None:
        self.kubeconfig = kubeconfig
        self.work_dir = work_dir
        self.lease_name = lease_name
        self.resync_seconds = resync_seconds
        self.metrics_port = free_ports(1)[0]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.work_dir / "operator.log"

    def start(self) -> None:
        tmp = self.work_dir / "tmp"  # the kubernetes client's discovery cache lands in $TMPDIR
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TMPDIR": str(tmp),
            "SLM_OPERATOR_RESYNC_SECONDS": f"{self.resync_seconds:g}",
            "SLM_OPERATOR_METRICS_PORT": str(self.metrics_port),
            "SLM_OPERATOR_NAMESPACE": OPERATOR_NAMESPACE,
            "SLM_OPERATOR_LEASE_NAME": self.lease_name,
        }
        command = [sys.executable, "-m", "slm_operator.cli", "--log-level", "INFO", "operator", "run"]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,  # Ctrl-C reaches the benchmark only, which stops us in order
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("the operator was not started")
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise RuntimeError(f"the operator exited; log: {self.log_path}\n{self.log_tail()}")

    def wait_leading(self, timeout: float) -> None:
        """Until /readyz answers 200: the startup handler ran and this process holds the Lease."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.check_alive()
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            with contextlib.suppress(urllib.error.URLError, OSError), urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"the operator did not lead within {timeout:.0f}s; log: {self.log_path}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as reply:
            text: str = reply.read().decode("utf-8")
        return text

    def memory_mib(self) -> tuple[float, float]:
        """(VmRSS, VmHWM) of the operator process, in MiB, from /proc/<pid>/status."""
        fields: dict[str, float] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024  # kB
        return fields["VmRSS"], fields["VmHWM"]

    def cpu_seconds(self) -> float:
        """User plus system CPU time of the operator process so far (/proc/<pid>/stat)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text(encoding="utf-8").rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (kopf shuts down and releases the Lease), SIGKILL after `grace` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


@dataclass(frozen=True)
class Request:
    """One request the apiserver received from the operator, from its audit log."""

    verb: str  # as apiserver_request_total names it: GET LIST WATCH POST PUT PATCH DELETE DELETECOLLECTION
    resource: str  # "deployments", "slmdeployments/status", "leases"; the path for non-resource requests
    namespace: str
    name: str
    user_agent: str
    code: int
    received: float  # seconds since the epoch
    completed: float  # when the apiserver answered (its stageTimestamp), seconds since the epoch

    @property
    def write(self) -> bool:
        return self.verb in ("POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION")

    @property
    def lease(self) -> bool:
        return self.resource == "leases"


# Audit verbs (Kubernetes API verbs) as apiserver_request_total's verb label spells them. Server-side apply is
# an audit "patch" too (the metric's APPLY needs the content type, which the audit log does not carry).
_VERBS = {
    "get": "GET",
    "list": "LIST",
    "watch": "WATCH",
    "create": "POST",
    "update": "PUT",
    "patch": "PATCH",
    "delete": "DELETE",
    "deletecollection": "DELETECOLLECTION",
}


def _timestamp(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _request(event: dict[str, Any]) -> Request:
    ref = event.get("objectRef") or {}
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    return Request(
        verb=_VERBS.get(event.get("verb", ""), str(event.get("verb", "")).upper()),
        resource=resource or event.get("requestURI", "").split("?")[0],
        namespace=ref.get("namespace", ""),
        name=ref.get("name", ""),
        user_agent=event.get("userAgent", ""),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
        received=_timestamp(event["requestReceivedTimestamp"]),
        completed=_timestamp(event.get("stageTimestamp") or event["requestReceivedTimestamp"]),
    )


def audit_requests(path: Path, user: str = OPERATOR_USER) -> list[Request]:
    """Every request of `user` in the audit log, once each (a watch logs ResponseStarted and ResponseComplete)."""
    seen: set[str] = set()
    requests: list[Request] = []
    if not path.exists():
        return requests
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            if event["auditID"] in seen or (event.get("user") or {}).get("username") != user:
                continue
            seen.add(event["auditID"])
            requests.append(_request(event))
    return requests


def object_path(manifest: dict[str, Any]) -> str:
    """The REST path of a namespaced object (the operator's own table of plurals: the bare client needs no
    discovery either)."""
    api_version, meta = manifest["apiVersion"], manifest["metadata"]
    return kube_paths.object_path(api_version, manifest["kind"], meta["namespace"], meta["name"])


class AsyncKube:
    """A plain async client (one aiohttp session, the admin kubeconfig's credentials) that server-side applies
    manifests with a fixed number of requests in flight: the bare client the operator is measured against."""

    def __init__(self, kubeconfig: Path, field_manager: str = "slm-bench-bare") -> None:
        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call,unused-ignore]
        self._host = configuration.host
        context = ssl.create_default_context(cafile=configuration.ssl_ca_cert)
        if configuration.cert_file:
            context.load_cert_chain(configuration.cert_file, configuration.key_file)
        self._ssl = context
        self._headers = {"Content-Type": "application/apply-patch+yaml"}
        token = configuration.get_api_key_with_prefix("BearerToken", alias="authorization")
        if token:
            self._headers["Authorization"] = token
        self._field_manager = field_manager

    async def _apply_one(self, session: aiohttp.ClientSession, manifest: dict[str, Any]) -> None:
        params = {"fieldManager": self._field_manager, "force": "true"}
        body = json.dumps(manifest)  # JSON is YAML
        for attempt in range(5):
            async with session.patch(self._host + object_path(manifest), params=params, data=body) as reply:
                if reply.status < 300:
                    await reply.read()
                    return
                text = await reply.text()
                if reply.status not in (409, 429, 500, 503, 504) or attempt == 4:
                    raise RuntimeError(f"apply {object_path(manifest)}: HTTP {reply.status}: {text[:300]}")
            await asyncio.sleep(0.2 * (attempt + 1))

    async def _apply_all(self, manifests: Sequence[dict[str, Any]], concurrency: int) -> tuple[float, float]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        for manifest in manifests:
            queue.put_nowait(manifest)
        connector = aiohttp.TCPConnector(ssl=self._ssl, limit=concurrency)
        async with aiohttp.ClientSession(headers=self._headers, connector=connector) as session:

            async def worker() -> None:
                while not queue.empty():
                    await self._apply_one(session, queue.get_nowait())

            began = time.time()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return began, time.time()

    def apply_all(self, manifests: Sequence[dict[str, Any]], concurrency: int) -> tuple[float, float]:
        """Apply every manifest, `concurrency` requests in flight; (first request, last answer) in epoch seconds."""
        return asyncio.run(self._apply_all(manifests, concurrency))
