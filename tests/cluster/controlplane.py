"""Run a real Kubernetes control plane as local processes: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler and kwok, whose simulated nodes come from :mod:`cluster.nodes`.

Everything lives in one state directory (PKI, etcd data, kubeconfigs, logs, pid files, chosen ports), so any
number of control planes coexist on free ports, and ``ControlPlane(state_dir).stop()`` from another process
stops exactly the processes that ``start()`` left running.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from cluster import kube
from cluster.metrics import MetricsPipeline
from cluster.network import KWOK_POD_CIDR, SERVICE_CIDR
from cluster.nodes import TEST_NODES
from cluster.paths import BUILD_SCRIPT, Binaries, binaries
from cluster.pki import PKI, CertKey, generate_pki
from cluster.processes import Process, free_ports, pid_alive, tail
from cluster.realnode import RealNode

__all__ = [
    "COMPONENTS",
    "POD_CIDR",
    "SERVICE_CIDR",
    "ClientLimits",
    "Cluster",
    "ControlPlane",
    "ControlPlaneError",
    "Ports",
    "reap_stale",
]

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
POD_CIDR = KWOK_POD_CIDR
_START_ATTEMPTS = 3  # ports are picked free but may be taken before a component binds them
# Sub-directories of the state directory that start() recreates from scratch.
_GENERATED = ("pki", "etcd", "kubeconfigs", "run", "logs", "kube-controller-manager", "kube-scheduler")

Progress = Callable[[str], None]


class ControlPlaneError(RuntimeError):
    """The control plane could not start; the message carries the relevant component logs."""


@dataclass(frozen=True)
class Ports:
    """The TCP ports one control plane listens on (all on 127.0.0.1)."""

    etcd: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*free_ports(6))


@dataclass(frozen=True)
class ClientLimits:
    """The client-side rate limits (--kube-api-qps, --kube-api-burst) of kube-controller-manager and kube-scheduler,
    always passed as explicit flags. The defaults are Kubernetes' own (controller-manager 20/30, scheduler 50/100),
    which production clusters commonly raise: with hundreds of objects created at once, the controllers' requests
    (ReplicaSets, pods, endpoints, bindings) queue behind these limits, not behind the apiserver."""

    controller_manager_qps: float = 20.0
    controller_manager_burst: int = 30
    scheduler_qps: float = 50.0
    scheduler_burst: int = 100

    @classmethod
    def raised(cls) -> ClientLimits:
        """A setting large clusters use: ten times the default rates."""
        return cls(200.0, 300, 500.0, 1000)

    def controller_manager_flags(self) -> list[str]:
        return [f"--kube-api-qps={self.controller_manager_qps:g}", f"--kube-api-burst={self.controller_manager_burst}"]

    def scheduler_flags(self) -> list[str]:
        return [f"--kube-api-qps={self.scheduler_qps:g}", f"--kube-api-burst={self.scheduler_burst}"]


@dataclass(frozen=True)
class Cluster:
    """What a test session talks to: a kubeconfig, and the control plane behind it when we know it."""

    kubeconfig: Path
    plane: ControlPlane | None  # None for a cluster tests/cluster did not start (then no logs to show)
    owned: bool  # started by this session, which stops it at the end


def _quiet(_: str) -> None:
    return None


class ControlPlane:
    """One control plane rooted at `state_dir`."""

    def __init__(
        self,
        state_dir: Path,
        bins: Binaries | None = None,
        progress: Progress = _quiet,
        *,
        attached: bool = False,
        client_limits: ClientLimits | None = None,
    ) -> None:
        """`attached`: the components die with this Python process (test sessions); detached ones outlive
        it until `stop()` (make cluster-up / cluster-down). `client_limits`: the controller-manager's and
        scheduler's client rate limits (default: Kubernetes' defaults, spelt out as flags)."""
        self.state_dir = state_dir.resolve()
        self.attached = attached
        self.client_limits = client_limits or ClientLimits()
        self.bins = bins or binaries()
        self.progress = progress
        self.processes = {name: Process(name, self.state_dir) for name in COMPONENTS}

    # ---- what a caller needs -------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (credentials embedded, so it can be copied anywhere)."""
        return self.state_dir / "kubeconfig"

    @property
    def info_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def ports(self) -> Ports:
        data = json.loads(self.info_file.read_text(encoding="utf-8"))
        return Ports(**data["ports"])

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports.apiserver}"

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path, progress: Progress = _quiet) -> ControlPlane | None:
        """The control plane that wrote `kubeconfig`, or None when it belongs to some other cluster."""
        state_dir = kubeconfig.resolve().parent
        if not (state_dir / "cluster.json").is_file():
            return None
        return cls(state_dir, progress=progress)

    def running(self) -> bool:
        """Every component process is alive."""
        return self.info_file.is_file() and all(p.running() for p in self.processes.values())

    def log_files(self) -> dict[str, Path]:
        """Every component's log, the real node's and the metrics pipeline's too once they have run."""
        files = {name: process.log_file for name, process in self.processes.items()}
        files.update({name: path for name, path in self.real_node().log_files().items() if path.exists()})
        files.update({name: path for name, path in self.metrics_pipeline().log_files().items() if path.exists()})
        return files

    def real_node(self, progress: Progress | None = None) -> RealNode:
        """This control plane's real node (see :mod:`cluster.realnode`; started separately)."""
        return RealNode(self, progress=progress or self.progress)

    def metrics_pipeline(self, progress: Progress | None = None) -> MetricsPipeline:
        """The real node's autoscaling metrics pipeline (see :mod:`cluster.metrics`; started separately,
        after the real node)."""
        return MetricsPipeline(self, progress=progress or self.progress)

    def log_tails(self, lines: int = 30) -> dict[str, str]:
        """The last lines of each component's log."""
        return {name: tail(path, lines) for name, path in self.log_files().items()}

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 300.0) -> None:
        """Start every component (reusing a running control plane in the same state directory) and wait
        until the API answers, the controllers and scheduler are healthy and every kwok node is Ready."""
        if self.running():
            self.progress(f"control plane already running in {self.state_dir}")
            return
        missing = self.bins.missing(node=False)
        if missing:
            raise ControlPlaneError(
                "control-plane binaries are missing: "
                + ", ".join(str(path) for path in missing)
                + f"\nbuild them with `make cluster-bins` (runs {BUILD_SCRIPT.name}, 10-30 minutes cold)"
            )
        self.stop()  # leftovers of a crashed run in this state directory
        started = time.monotonic()
        deadline = started + timeout
        for attempt in range(1, _START_ATTEMPTS + 1):
            try:
                self._start_once(deadline)
                break
            except Exception as error:
                logs = {name: tail(path, 25) for name, path in self.log_files().items()}
                self.stop()
                port_taken = any("address already in use" in text for text in logs.values())
                if port_taken and attempt < _START_ATTEMPTS and time.monotonic() < deadline:
                    self.progress("a port was taken meanwhile; retrying on fresh ports")
                    continue
                report = "\n".join(f"----- {name} log -----\n{text}" for name, text in logs.items())
                raise ControlPlaneError(
                    f"control plane failed to start: {error}\nstate and logs: {self.state_dir}\n{report}"
                ) from error
        self.progress(f"control plane ready in {time.monotonic() - started:.1f}s: {self.server}")

    def _start_once(self, deadline: float) -> None:
        self._prepare()
        pki = generate_pki(self.state_dir / "pki")
        self._write_kubeconfigs(pki)
        self._start_etcd(deadline)
        self._start_apiserver(pki, deadline)
        self._start_controllers(pki, deadline)
        self._start_kwok(deadline)
        self._wait_for_cluster(deadline)

    def stop(self) -> None:
        """Stop the metrics pipeline and the real node when this control plane has them (deleting the node's
        pods first and undoing its changes to the host), then every component, newest first. Data and logs
        stay in the state directory."""
        self.metrics_pipeline().stop()
        self.real_node().stop()
        for name in reversed(COMPONENTS):
            process = self.processes[name]
            if process.running():
                self.progress(f"stopping {name}")
            process.stop()

    def destroy(self) -> None:
        """Stop and delete the whole state directory."""
        self.stop()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    # ---- steps ---------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        for stale in _GENERATED:
            shutil.rmtree(self.state_dir / stale, ignore_errors=True)
        self.kubeconfig.unlink(missing_ok=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        ports = Ports.pick()
        info = {"ports": asdict(ports), "binaries": {k: str(v) for k, v in asdict(self.bins).items()}}
        self.info_file.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")

    def _write_kubeconfigs(self, pki: PKI) -> None:
        kube.write_kubeconfig(self.kubeconfig, self.server, pki.ca.cert, pki.admin, "slm-test", embed=True)
        users: dict[str, CertKey] = {
            "kube-controller-manager": pki.controller_manager,
            "kube-scheduler": pki.scheduler,
            "kwok": pki.kwok,
        }
        for name, pair in users.items():
            kube.write_kubeconfig(self._component_kubeconfig(name), self.server, pki.ca.cert, pair, name)

    def _component_kubeconfig(self, name: str) -> Path:
        return self.state_dir / "kubeconfigs" / f"{name}.kubeconfig"

    def _start_etcd(self, deadline: float) -> None:
        port, peer = self.ports.etcd, self.ports.etcd_peer
        self.progress(f"starting etcd on 127.0.0.1:{port}")
        self.processes["etcd"].start(
            [
                str(self.bins.etcd),
                "--name=slm-test",
                f"--data-dir={self.state_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{port}",
                f"--advertise-client-urls=http://127.0.0.1:{port}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=slm-test=http://127.0.0.1:{peer}",
                "--initial-cluster-state=new",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            die_with_parent=self.attached,
        )
        self._wait_http("etcd", f"http://127.0.0.1:{port}/health", deadline, expect='"health":"true"')

    def _start_apiserver(self, pki: PKI, deadline: float) -> None:
        self.progress(f"starting kube-apiserver on {self.server}")
        self.processes["kube-apiserver"].start(
            [
                str(self.bins.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{self.ports.etcd}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self.ports.apiserver}",
                f"--cert-dir={self.state_dir / 'pki'}",
                f"--tls-cert-file={pki.apiserver.cert}",
                f"--tls-private-key-file={pki.apiserver.key}",
                f"--client-ca-file={pki.ca.cert}",
                f"--requestheader-client-ca-file={pki.ca.cert}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--proxy-client-cert-file={pki.front_proxy.cert}",
                f"--proxy-client-key-file={pki.front_proxy.key}",
                # Aggregated APIs (metrics-server, the KEDA adapter: cluster.metrics) run as host processes on
                # the real node's address: reach them at their EndpointSlice, not through a ClusterIP.
                "--enable-aggregator-routing=true",
                f"--kubelet-client-certificate={pki.kubelet_client.cert}",
                f"--kubelet-client-key={pki.kubelet_client.key}",
                # Node names do not resolve here (and a lookup must not leave the machine): use the IP.
                "--kubelet-preferred-address-types=InternalIP",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction,PodSecurity",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki.service_account_pub}",
                f"--service-account-signing-key-file={pki.service_account_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--endpoint-reconciler-type=none",
                "--profiling=false",
            ],
            die_with_parent=self.attached,
        )
        self._wait_http("kube-apiserver", f"{self.server}/readyz", deadline, context=self._admin_tls(pki))

    def _start_controllers(self, pki: PKI, deadline: float) -> None:
        common = [
            "--bind-address=127.0.0.1",
            "--leader-elect=false",
        ]
        kcm = self._component_kubeconfig("kube-controller-manager")
        self.progress("starting kube-controller-manager and kube-scheduler")
        self.processes["kube-controller-manager"].start(
            [
                str(self.bins.kube_controller_manager),
                f"--kubeconfig={kcm}",
                f"--authentication-kubeconfig={kcm}",
                f"--authorization-kubeconfig={kcm}",
                f"--secure-port={self.ports.controller_manager}",
                f"--cert-dir={self.state_dir / 'kube-controller-manager'}",
                f"--service-account-private-key-file={pki.service_account_key}",
                f"--root-ca-file={pki.ca.cert}",
                f"--cluster-signing-cert-file={pki.ca.cert}",
                f"--cluster-signing-key-file={pki.ca.key}",
                "--use-service-account-credentials=true",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *self.client_limits.controller_manager_flags(),
                *common,
            ],
            die_with_parent=self.attached,
        )
        scheduler = self._component_kubeconfig("kube-scheduler")
        self.processes["kube-scheduler"].start(
            [
                str(self.bins.kube_scheduler),
                f"--kubeconfig={scheduler}",
                f"--authentication-kubeconfig={scheduler}",
                f"--authorization-kubeconfig={scheduler}",
                f"--secure-port={self.ports.scheduler}",
                f"--cert-dir={self.state_dir / 'kube-scheduler'}",
                *self.client_limits.scheduler_flags(),
                *common,
            ],
            die_with_parent=self.attached,
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for name, port in (
            ("kube-controller-manager", self.ports.controller_manager),
            ("kube-scheduler", self.ports.scheduler),
        ):
            self._wait_http(name, f"https://127.0.0.1:{port}/healthz", deadline, context=insecure)

    def _start_kwok(self, deadline: float) -> None:
        with kube.api_client(self.kubeconfig) as api:
            for node in TEST_NODES:
                kube.create_node(api, node)
        stages = self.bins.kwok_stages
        stage_files = sorted(
            path
            for folder in ("node/fast", "node/heartbeat-with-lease", "pod/fast")
            for path in (stages / folder).glob("*.yaml")
            if path.name != "kustomization.yaml"
        )
        if not stage_files:
            raise ControlPlaneError(f"no kwok stage files under {stages}; rerun hack/cluster/build-bins.sh")
        self.progress(f"starting kwok with {len(TEST_NODES)} simulated nodes")
        self.processes["kwok"].start(
            [
                str(self.bins.kwok),
                f"--kubeconfig={self._component_kubeconfig('kwok')}",
                "--manage-all-nodes=false",
                "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
                f"--cidr={POD_CIDR}",
                "--node-ip=10.244.255.254",
                "--node-lease-duration-seconds=40",
                f"--server-address=127.0.0.1:{self.ports.kwok}",
                *(f"--config={path}" for path in stage_files),
            ],
            die_with_parent=self.attached,
        )
        self._wait_http("kwok", f"http://127.0.0.1:{self.ports.kwok}/healthz", deadline)

    def _wait_for_cluster(self, deadline: float) -> None:
        self.progress("waiting for nodes to be Ready and the default service account")
        with kube.api_client(self.kubeconfig) as api:
            self._poll("kwok nodes Ready", deadline, lambda: kube.unready_nodes(api, TEST_NODES))
            self._poll("default service account", deadline, lambda: kube.missing_service_account(api))

    # ---- polling -------------------------------------------------------------------------------------

    def _admin_tls(self, pki: PKI) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(pki.ca.cert))
        context.load_cert_chain(str(pki.admin.cert), str(pki.admin.key))
        return context

    def _ensure_alive(self, component: str) -> None:
        process = self.processes[component]
        if not process.running():
            raise ControlPlaneError(f"{component} exited; see {process.log_file}")

    def _wait_http(
        self,
        component: str,
        url: str,
        deadline: float,
        context: ssl.SSLContext | None = None,
        expect: str | None = None,
    ) -> None:
        last = "no answer yet"
        while time.monotonic() < deadline:
            self._ensure_alive(component)
            try:
                with urllib.request.urlopen(url, timeout=3, context=context) as response:
                    body = response.read().decode("utf-8", errors="replace")
                if expect is None or expect in body:
                    return
                last = body[:200]
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.25)
        raise ControlPlaneError(f"{component} not healthy at {url}: {last}")

    def _poll(self, what: str, deadline: float, pending: Callable[[], list[str]]) -> None:
        waiting: list[str] = []
        while time.monotonic() < deadline:
            for component in COMPONENTS:
                self._ensure_alive(component)
            try:
                waiting = pending()
            except kube.ApiException as error:
                waiting = [f"API error {error.status}: {error.reason}"]
            if not waiting:
                return
            time.sleep(0.5)
        raise ControlPlaneError(f"timed out waiting for {what}: {', '.join(waiting)}")


def reap_stale(parent: Path, prefix: str = "pytest-", keep_s: float = 86400.0) -> list[Path]:
    """Stop control planes under `parent/<prefix><pid>` whose owning process is gone, and delete those
    state directories once older than `keep_s` (younger ones stay for their logs). Returns what it stopped."""
    stopped = []
    for state_dir in sorted(parent.glob(f"{prefix}*")):
        owner = state_dir.name.removeprefix(prefix)
        if not owner.isdigit() or pid_alive(int(owner)) or not state_dir.is_dir():
            continue
        plane = ControlPlane(state_dir)
        # A killed session's components die with it, but its real node's mounts, links and rules stay.
        if any(process.running() for process in plane.processes.values()) or plane.real_node().claimed():
            plane.stop()
            stopped.append(state_dir)
        if time.time() - state_dir.stat().st_mtime > keep_s:
            shutil.rmtree(state_dir, ignore_errors=True)
    return stopped
