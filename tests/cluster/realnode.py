"""One real node beside the kwok nodes: containerd + runc (Debian's packages), the pinned kubelet and
kube-proxy (built by hack/cluster/build-bins.sh), and a CNI bridge (Debian's containernetworking-plugins).

Pods that must really run (probes, init containers, Service traffic, rollouts) are placed on it with the
node's label and a toleration for its taint (:data:`NODE_SELECTOR`, :data:`TOLERATION`); everything else
keeps landing on kwok nodes. Service traffic goes through kube-proxy in iptables mode (see docs/real-node.md).

The node is machine-wide, not per control plane: one bridge, one set of kube-proxy chains. So at most one runs
at a time on a machine; :meth:`RealNode.start` waits for (or reclaims from a dead owner) the claim in
:data:`RUN_DIR`. Everything it changes on the host is recorded there first and undone by :meth:`RealNode.stop`:
pods, containers, mounts, network namespaces, the bridge and its routes, iptables chains, the sysctls the
kubelet and the CNI plugins set, the kubelet's cgroups.

Network rule: pods get no default route (only the pod subnet and the Service range), and the host gets an
``unreachable`` route for kwok's simulated pod range, so traffic stays between this machine and its pods.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from kubernetes import client

from cluster import images, kube
from cluster.network import KWOK_POD_CIDR, NODE_IP, POD_CIDR, SERVICE_CIDR
from cluster.paths import Binaries
from cluster.pki import CertKey, issue_certificate, load_ca
from cluster.processes import Process, free_ports, pid_alive, tail
from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES

if TYPE_CHECKING:
    from cluster.controlplane import ControlPlane

__all__ = [
    "BRIDGE",
    "COMPONENTS",
    "DEBIAN_PACKAGES",
    "KUBELET_ROOT",
    "NODE_IP",
    "NODE_LABEL",
    "NODE_NAME",
    "NODE_SELECTOR",
    "POD_CIDR",
    "RUN_DIR",
    "TAINT",
    "TOLERATION",
    "NodePorts",
    "RealNode",
    "RealNodeError",
    "leftovers",
    "missing_packages",
]

NODE_NAME = "slm-real-0"
NODE_LABEL = "slm-operator.io/real-node"
NODE_SELECTOR = {NODE_LABEL: "true"}
TAINT = {"key": NODE_LABEL, "value": "true", "effect": "NoSchedule"}
TOLERATION = {"key": NODE_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"}

BRIDGE = "slm-br0"
CNI_NETWORK = "slm-realnode"

# Short fixed paths: unix sockets (containerd's, the kubelet's device-plugin and pod-resources sockets) must
# stay under 108 bytes however deep the checkout lives. Bulk data (images, logs) stays in the state dir.
RUN_DIR = Path("/run/slm-realnode")
KUBELET_ROOT = Path("/var/lib/slm-realnode/kubelet")
CNI_BIN_DIR = Path("/usr/lib/cni")  # where Debian's containernetworking-plugins put them
_CONTAINER_LOG_LINKS = Path("/var/log/containers")  # the kubelet's fixed symlink directory
_SHIM_SOCKETS = Path("/run/containerd/s")  # containerd 1.x's fixed directory for shim sockets

COMPONENTS = ("containerd", "kubelet", "kube-proxy", "apiserver-proxy")

# command (or file) -> the Debian package that provides it
DEBIAN_PACKAGES: dict[str, str] = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "ip6tables": "iptables",
    "ip": "iproute2",
    "mount": "mount",
    "umount": "mount",
    str(CNI_BIN_DIR / "bridge"): "containernetworking-plugins",
    str(CNI_BIN_DIR / "host-local"): "containernetworking-plugins",
    str(CNI_BIN_DIR / "loopback"): "containernetworking-plugins",
    str(CNI_BIN_DIR / "portmap"): "containernetworking-plugins",
}

# Host sysctls that the kubelet (kernel tunables), the bridge plugin (forwarding) or kube-proxy may change:
# recorded before the node starts and put back when it stops.
_SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
_IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
_OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-")
_CLAIM_FILE = RUN_DIR / "claim.json"
_KWOK_ROUTE = f"unreachable {KWOK_POD_CIDR}"
_API_TIMEOUT = 5.0  # seconds per API call while stopping
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Progress = Callable[[str], None]


class RealNodeError(RuntimeError):
    """The real node could not start (or a prerequisite is missing); the message says what to do."""


def _quiet(_: str) -> None:
    return None


_TIMED_OUT = 124  # timeout(1)'s exit status, for a command _run stopped waiting for


def _run(argv: list[str], *, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}"}
    env.pop("KUBECONFIG", None)
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        # A command that hangs is a failed command: cleanup (check=False) goes on to its next step, and a
        # required step says what hung. containerd restarted on a crashed node's state can answer nothing for
        # a while; one such `ctr version` once failed every real-node test of a CI run.
        result = subprocess.CompletedProcess(argv, _TIMED_OUT, "", f"timed out after {timeout:g}s")
    if check and result.returncode != 0:
        raise RealNodeError(f"{shlex.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _which(command: str) -> str | None:
    if command.startswith("/"):
        return command if os.access(command, os.X_OK) else None
    return shutil.which(command, path=f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}")


def missing_packages() -> dict[str, str]:
    """Prerequisites that are not installed: command -> Debian package."""
    return {command: package for command, package in DEBIAN_PACKAGES.items() if _which(command) is None}


@dataclass(frozen=True)
class NodePorts:
    """Ports of the node's components (the kubelet's on NODE_IP, the rest on 127.0.0.1)."""

    kubelet: int
    kubelet_healthz: int
    proxy_healthz: int
    proxy_metrics: int
    apiserver_proxy: int

    @classmethod
    def pick(cls) -> NodePorts:
        return cls(*free_ports(5))


def _mountpoints() -> list[str]:
    """Every mount point, in mount order (later mounts may sit on earlier ones)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text(encoding="utf-8").splitlines():
        field = line.split(" ")[4]
        points.append(field.encode().decode("unicode_escape"))
    return points


def _under(path: str, roots: list[Path]) -> bool:
    return any(path == str(root) or path.startswith(f"{root}/") for root in roots)


def _iptables_rules(command: str) -> dict[str, list[str]] | None:
    """`command -t T -S` for every table (None when the command is missing or does not work here)."""
    if _which(command) is None:
        return None
    rules = {}
    for table in _IPTABLES_TABLES:
        result = _run([command, "-w", "5", "-t", table, "-S"], check=False)
        if result.returncode != 0:
            continue
        rules[table] = result.stdout.splitlines()
    return rules


def _chains(rules: list[str]) -> set[str]:
    return {line.split()[1] for line in rules if line.startswith("-N ")}


def _read_sysctls() -> dict[str, str]:
    values = {}
    for name in _SYSCTLS:
        with contextlib.suppress(OSError):
            values[name] = (Path("/proc/sys") / name).read_text(encoding="utf-8").strip()
    return values


def _cgroup_dirs(name: str = "kubepods") -> list[Path]:
    root = Path("/sys/fs/cgroup")
    if not root.is_dir():
        return []
    candidates = [root / name, *(hierarchy / name for hierarchy in root.iterdir() if hierarchy.is_dir())]
    return [path for path in candidates if path.is_dir()]


def leftovers(roots: tuple[Path, ...] = ()) -> list[str]:
    """What a stopped real node must not leave behind: mounts under its directories (and under `roots`, e.g.
    a node's containerd root), network namespaces, its bridge or veths on it, its routes, iptables chains of
    kube-proxy/CNI/kubelet, containerd shims. Empty when clean (the cleanup test and `cluster status`)."""
    found = []
    dirs = [RUN_DIR, KUBELET_ROOT.parent, *roots]
    found += [f"mount {point}" for point in _mountpoints() if _under(point, dirs)]
    found += [f"directory {path}" for path in (RUN_DIR, KUBELET_ROOT.parent) if path.exists()]
    links = _run(["ip", "-o", "link", "show"], check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name == BRIDGE or f"master {BRIDGE} " in line:
            found.append(f"link {name}")
    routes = _run(["ip", "route", "show"], check=False).stdout
    found += [f"route {line}" for line in routes.splitlines() if BRIDGE in line or _KWOK_ROUTE in line]
    for command in ("iptables", "ip6tables"):
        for table, rules in (_iptables_rules(command) or {}).items():
            chains = [chain for chain in _chains(rules) if chain.startswith(_OUR_CHAIN_PREFIXES)]
            found += [f"{command} -t {table} chain {chain}" for chain in sorted(chains)]
    found += [f"process {pid} {cmd}" for pid, cmd in _our_processes()]
    found += [f"process {pid} in {cgroup}" for pid, cgroup in _pod_processes()]
    return found


def _pod_processes() -> list[tuple[int, Path]]:
    """Processes in the kubelet's pod cgroups (v1 `pids` hierarchy, else the unified one)."""
    found = []
    for top in (Path("/sys/fs/cgroup/pids/kubepods"), Path("/sys/fs/cgroup/kubepods")):
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                found += [(int(pid), procs.parent) for pid in procs.read_text(encoding="utf-8").split()]
    return found


def _our_processes() -> list[tuple[int, str]]:
    """Processes that belong to the real node by their command line: containerd shims and containers'
    runc calls naming our socket or state paths (the components themselves are tracked by pid files)."""
    marks = (str(RUN_DIR), str(KUBELET_ROOT))
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(part.decode(errors="replace") for part in argv if part)
        if any(mark in command for mark in marks) and "containerd-shim" in command:
            found.append((int(entry.name), command[:200]))
    return found


class RealNode:
    """The real node of one control plane (its files live in `<state dir>/realnode`)."""

    def __init__(
        self,
        plane: ControlPlane,
        bins: Binaries | None = None,
        progress: Progress = _quiet,
        *,
        attached: bool | None = None,
    ) -> None:
        self.plane = plane
        self.bins = bins or plane.bins
        self.progress = progress
        self.attached = plane.attached if attached is None else attached
        self.dir = plane.state_dir / "realnode"
        self.processes = {name: Process(name, plane.state_dir) for name in COMPONENTS}

    # ---- paths -------------------------------------------------------------------------------------

    @property
    def socket(self) -> Path:
        return RUN_DIR / "containerd.sock"

    @property
    def containerd_root(self) -> Path:
        return self.dir / "containerd"

    @property
    def info_file(self) -> Path:
        return self.dir / "node.json"

    @property
    def ports(self) -> NodePorts:
        return NodePorts(**json.loads(self.info_file.read_text(encoding="utf-8"))["ports"])

    def log_files(self) -> dict[str, Path]:
        return {name: process.log_file for name, process in self.processes.items()}

    def running(self) -> bool:
        """containerd, the kubelet and kube-proxy are alive and this node holds the machine's claim."""
        return self.claimed() and all(p.running() for p in self.processes.values())

    # ---- images ------------------------------------------------------------------------------------

    def ctr(self, *args: str, check: bool = True, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
        """Run `ctr` against this node's containerd in the CRI's `k8s.io` namespace."""
        return _run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args], check=check, timeout=timeout
        )

    def list_images(self) -> dict[str, str]:
        """Images in containerd's k8s.io namespace: reference -> target digest."""
        listing = self.ctr("images", "list").stdout.splitlines()[1:]
        return {fields[0]: fields[2] for fields in (line.split() for line in listing) if len(fields) >= 3}

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI image archive (``buildah push IMG oci-archive:FILE:NAME``, or tests/cluster/images.py)
        into containerd's k8s.io namespace, where the kubelet finds it (pods use IfNotPresent/Never).

        Idempotent: images already present with the same digest are not imported again. The archive must
        name its images with full references (``localhost/name:tag``). Returns the references."""
        references = images.archive_references(archive)
        if not references:
            raise RealNodeError(f"{archive}: the archive names no image (push it as oci-archive:FILE:NAME)")
        short = [name for name in references if "/" not in name and ":" not in name]
        if short:
            raise RealNodeError(f"{archive}: image names {short} are not full references (localhost/name:tag)")
        present = self.list_images()
        if all(present.get(name) == digest for name, digest in references.items()):
            return sorted(references)
        started = time.monotonic()
        self.ctr("images", "import", "--no-unpack=false", str(archive))
        present = self.list_images()
        missing = [name for name, digest in references.items() if present.get(name) != digest]
        if missing:
            raise RealNodeError(f"importing {archive} did not create {missing}; containerd has {sorted(present)}")
        self.progress(f"imported {', '.join(sorted(references))} in {time.monotonic() - started:.1f}s")
        return sorted(references)

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0, claim_timeout: float = 0.0) -> None:
        """Start containerd, the kubelet and kube-proxy and wait until the node is Ready. Another real node
        on this machine (another checkout or session) is waited for up to `claim_timeout` seconds."""
        if self.running():
            self.progress("real node already running")
            return
        if os.geteuid() != 0:
            raise RealNodeError("the real node needs root (mounts, network namespaces, iptables)")
        missing = missing_packages()
        if missing:
            packages = sorted(set(missing.values()))
            raise RealNodeError(
                f"the real node needs {', '.join(sorted(missing))}: install the Debian packages "
                f"{' '.join(packages)} (apt-get install --no-install-recommends {' '.join(packages)})"
            )
        node_bins = [path for path in (self.bins.kubelet, self.bins.kube_proxy) if not path.exists()]
        if node_bins:
            raise RealNodeError(
                f"missing {', '.join(map(str, node_bins))}: build them with `make cluster-bins` "
                "(hack/cluster/build-bins.sh)"
            )
        if not self.plane.running():
            raise RealNodeError(f"the control plane in {self.plane.state_dir} is not running")
        started = time.monotonic()
        deadline = started + timeout
        self._claim(claim_timeout)
        try:
            self._start_once(deadline)
        except Exception as error:
            logs = {name: tail(path, 25) for name, path in self.log_files().items()}
            self.stop()
            report = "\n".join(f"----- {name} log -----\n{text}" for name, text in logs.items() if text)
            raise RealNodeError(f"real node failed to start: {error}\n{report}") from error
        self.progress(f"real node {NODE_NAME} Ready in {time.monotonic() - started:.1f}s")

    def _start_once(self, deadline: float) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ports = NodePorts.pick()
        self.info_file.write_text(json.dumps({"ports": asdict(ports)}, indent=2) + "\n", encoding="utf-8")
        pause = images.pause_image()
        self._write_credentials()
        self._setup_network()
        self._start_containerd(pause, deadline)
        self.import_image(pause.archive)
        self._start_kubelet(deadline)
        self._start_apiserver_proxy()
        self._start_kube_proxy(deadline)

    def stop(self) -> None:
        """Delete the node's pods, stop its components and undo everything it changed on the host. Safe to
        call at any time (also when nothing runs, or after a crash of the process that started it)."""
        owner = self._claim_owner()
        if owner is not None and owner != str(self.plane.state_dir):
            # The machine's real node belongs to another control plane: only our own processes to stop.
            for process in self.processes.values():
                process.stop()
            return
        if owner is None and not any(p.running() for p in self.processes.values()) and not RUN_DIR.exists():
            return
        self._teardown()

    def _teardown(self) -> None:
        self.progress(f"stopping real node {NODE_NAME}")
        self._drain()
        for name in ("kube-proxy", "apiserver-proxy"):
            self.processes[name].stop()
        self._proxy_cleanup()
        self.processes["kubelet"].stop()
        self._remove_containers()
        self.processes["containerd"].stop()
        self._kill_shims()
        self._unmount()
        self._teardown_network()
        self._restore_host()
        self._release()

    # ---- claim (one real node per machine) --------------------------------------------------------------

    def _claim_owner(self) -> str | None:
        try:
            return str(json.loads(_CLAIM_FILE.read_text(encoding="utf-8"))["state_dir"])
        except (OSError, ValueError, KeyError):
            return None

    def claimed(self) -> bool:
        """This control plane holds the machine's real-node claim (running, or left behind by a crash)."""
        return self._claim_owner() == str(self.plane.state_dir)

    def _claim(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        announced = False
        cleanups = 0
        while True:
            try:
                RUN_DIR.mkdir(parents=True)
            except FileExistsError:
                cleanups += 1
                if cleanups > 5:
                    raise RealNodeError(
                        f"could not clean up {RUN_DIR} (still there after 5 tries): {leftovers()}"
                    ) from None
                owner = self._claim_owner()
                if owner == str(self.plane.state_dir):
                    self.progress("cleaning up after this cluster's previous real node")
                    self.stop()
                    continue
                if owner is None:
                    if time.time() - RUN_DIR.stat().st_mtime < 30:  # someone is claiming right now
                        cleanups = 0
                        time.sleep(1)
                        continue
                    self.progress(f"cleaning up an unclaimed {RUN_DIR}")
                    self._reclaim_from(None)
                    continue
                if not self._owner_alive(Path(owner), self._baseline().get("pid")):
                    self.progress(f"cleaning up a real node left behind by {owner}")
                    self._reclaim_from(Path(owner))
                    continue
                if time.monotonic() >= deadline:
                    raise RealNodeError(
                        f"another real node runs on this machine (control plane {owner}); only one can: "
                        f"stop it first (`make cluster-down CLUSTER_STATE_DIR={owner}`)"
                    ) from None
                if not announced:
                    self.progress(f"waiting for the real node of {owner} to stop (one per machine)")
                    announced = True
                cleanups = 0
                time.sleep(2)
                continue
            break
        baseline = {
            "state_dir": str(self.plane.state_dir),
            "pid": os.getpid(),
            "sysctls": _read_sysctls(),
            "iptables": {cmd: _iptables_rules(cmd) for cmd in ("iptables", "ip6tables")},
            "cgroups": [str(path) for path in _cgroup_dirs()],
            "created_dirs": [str(p) for p in (_CONTAINER_LOG_LINKS, _SHIM_SOCKETS.parent) if not p.exists()],
        }
        _CLAIM_FILE.write_text(json.dumps(baseline, indent=1) + "\n", encoding="utf-8")

    def _owner_alive(self, state_dir: Path, pid: object) -> bool:
        """The claim's owner still runs its node, or the process that claimed it is still starting it."""
        if any(Process(name, state_dir).running() for name in COMPONENTS):
            return True
        return isinstance(pid, int) and pid != os.getpid() and pid_alive(pid)

    def _reclaim_from(self, state_dir: Path | None) -> None:
        """Undo what a real node whose owner died left behind (its own files tell what; else ours)."""
        from cluster.controlplane import ControlPlane  # import cycle

        if state_dir is not None and state_dir.is_dir():
            RealNode(ControlPlane(state_dir), progress=self.progress)._teardown()
        else:
            self._teardown()

    def _baseline(self) -> dict[str, Any]:
        try:
            return dict(json.loads(_CLAIM_FILE.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            return {}

    # ---- start steps -------------------------------------------------------------------------------

    def _kubeconfig(self, name: str) -> Path:
        return self.plane.state_dir / "kubeconfigs" / f"{name}.kubeconfig"

    def _write_credentials(self) -> None:
        pki = self.plane.state_dir / "pki"
        ca = load_ca(pki)
        folder = pki / "realnode"
        node = issue_certificate(folder, ca, "kubelet-client", f"system:node:{NODE_NAME}", "system:nodes")
        proxy = issue_certificate(folder, ca, "kube-proxy", "system:kube-proxy")
        issue_certificate(folder, ca, "kubelet-serving", NODE_NAME, sans=(f"IP:{NODE_IP}", f"DNS:{NODE_NAME}"))
        server = self.plane.server
        kube.write_kubeconfig(self._kubeconfig("kubelet"), server, ca.cert, node, "kubelet")
        kube.write_kubeconfig(self._kubeconfig("kube-proxy"), server, ca.cert, proxy, "kube-proxy")

    def _serving(self) -> CertKey:
        folder = self.plane.state_dir / "pki" / "realnode"
        return CertKey(folder / "kubelet-serving.crt", folder / "kubelet-serving.key")

    def _setup_network(self) -> None:
        self._teardown_network()  # a bridge from a crashed run
        _run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        _run(["ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE])
        _run(["ip", "link", "set", BRIDGE, "up"])
        # ClusterIPs that kube-proxy has no rule for (yet) go to the bridge, not to the default route;
        # addresses of kwok's simulated pods (Service endpoints too) are unreachable instead of leaving.
        _run(["ip", "route", "add", SERVICE_CIDR, "dev", BRIDGE, "src", NODE_IP])
        _run(["ip", "route", "add", "unreachable", KWOK_POD_CIDR])
        net_d = self.dir / "cni" / "net.d"
        shutil.rmtree(net_d, ignore_errors=True)
        net_d.mkdir(parents=True)
        conflist = {
            "cniVersion": "1.0.0",
            "name": CNI_NETWORK,
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                        # No default route: pods reach their subnet (the node too) and the Service range only.
                        "routes": [{"dst": SERVICE_CIDR}],
                        "dataDir": str(RUN_DIR / "ipam"),
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }
        (net_d / f"10-{CNI_NETWORK}.conflist").write_text(json.dumps(conflist, indent=2) + "\n", encoding="utf-8")

    def _containerd_config(self, sandbox_image: str) -> str:
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        disabled = [
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.internal.v1.opt",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ]
        return "\n".join(
            [
                "# Written by tests/cluster/realnode.py: a private containerd for the test cluster's real node.",
                "version = 2",
                f'root = "{self.containerd_root}"',
                f'state = "{RUN_DIR / "containerd"}"',
                f"disabled_plugins = {json.dumps(disabled)}",
                "[grpc]",
                f'  address = "{self.socket}"',
                "[ttrpc]",
                f'  address = "{self.socket}.ttrpc"',
                "[debug]",
                '  address = ""',
                "[metrics]",
                '  address = ""',
                cri,
                f'  sandbox_image = "{sandbox_image}"',
                "  # The CRI asks runc for oom_score_adj -998 on the sandbox, which needs CAP_SYS_RESOURCE.",
                "  restrict_oom_score_adj = true",
                "  netns_mounts_under_state_dir = true",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                "  enable_selinux = false",
                f"{cri[:-1]}.containerd]",
                '  snapshotter = "overlayfs"',
                '  default_runtime_name = "runc"',
                f"{cri[:-1]}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri[:-1]}.containerd.runtimes.runc.options]",
                "  SystemdCgroup = false",
                f'  Root = "{RUN_DIR / "runc"}"',
                f"{cri[:-1]}.cni]",
                f'  bin_dir = "{CNI_BIN_DIR}"',
                f'  conf_dir = "{self.dir / "cni" / "net.d"}"',
                "  max_conf_num = 1",
                "",
            ]
        )

    def _env(self) -> dict[str, str]:
        return {"PATH": f"{os.environ.get('PATH', '')}:{_SYSTEM_PATH}", "NO_PROXY": "*"}

    def _start_containerd(self, pause: images.LocalImage, deadline: float) -> None:
        self.containerd_root.mkdir(parents=True, exist_ok=True)
        config = self.dir / "containerd.toml"
        config.write_text(self._containerd_config(pause.reference), encoding="utf-8")
        self.progress(f"starting containerd ({self.socket})")
        self._start("containerd", [_which("containerd") or "containerd", "--config", str(config)])
        self._wait("containerd", deadline, lambda: self.ctr("version", check=False, timeout=10).returncode == 0)

    def _kubelet_config(self) -> dict[str, Any]:
        ports = self.ports
        ca = self.plane.state_dir / "pki" / "ca.crt"
        serving = self._serving()
        return {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            # cgroups v1 (hybrid) on the test machines; containerd runs with SystemdCgroup = false.
            "failCgroupV1": False,
            "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.socket}",
            "address": NODE_IP,
            "port": ports.kubelet,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": ports.kubelet_healthz,
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca)},
            },
            "authorization": {"mode": "Webhook"},
            "registerWithTaints": [TAINT],
            "clusterDomain": "cluster.local",
            "resolvConf": "",  # no cluster DNS; pods get no nameserver (nothing to resolve off this machine)
            "failSwapOn": False,
            "makeIPTablesUtilChains": False,
            "podLogsDir": str(self.dir / "pod-logs"),
            "volumePluginDir": str(KUBELET_ROOT / "volume-plugins"),
            # Imported images cannot be pulled again: never garbage-collect them, never evict for disk.
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "nodefs.inodesFree": "1%",
                "imagefs.available": "1%",
                "imagefs.inodesFree": "1%",
            },
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "maxPods": 110,
        }

    def _start_kubelet(self, deadline: float) -> None:
        KUBELET_ROOT.mkdir(parents=True, exist_ok=True)
        (self.dir / "pod-logs").mkdir(parents=True, exist_ok=True)
        config = self.dir / "kubelet.yaml"
        config.write_text(yaml.safe_dump(self._kubelet_config(), sort_keys=False), encoding="utf-8")
        labels = {**NODE_SELECTOR, **DEFAULT_PROFILES[Accelerator.CPU].node_selector}
        with kube.api_client(self.plane.kubeconfig) as api, contextlib.suppress(kube.ApiException):
            client.CoreV1Api(api).delete_node(NODE_NAME)  # a stale Node (and its Ready) from a crashed run
        self.progress(f"starting kubelet ({NODE_NAME} on {NODE_IP}:{self.ports.kubelet})")
        self._start(
            "kubelet",
            [
                str(self.bins.kubelet),
                f"--config={config}",
                f"--kubeconfig={self._kubeconfig('kubelet')}",
                f"--root-dir={KUBELET_ROOT}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={NODE_IP}",
                f"--node-labels={','.join(f'{k}={v}' for k, v in sorted(labels.items()))}",
                "--v=1",
            ],
        )
        with kube.api_client(self.plane.kubeconfig) as api:
            self._wait("kubelet", deadline, lambda: _node_ready(api))

    def _start_apiserver_proxy(self) -> None:
        """In-cluster clients reach the apiserver at the `kubernetes` Service: its endpoint is a TCP proxy
        on NODE_IP (the apiserver itself listens on 127.0.0.1 only, and runs without an endpoint reconciler)."""
        port = self.ports.apiserver_proxy
        tests_dir = str(Path(__file__).resolve().parents[1])
        self._start(
            "apiserver-proxy",
            [sys.executable, "-m", "cluster.tcpproxy", f"{NODE_IP}:{port}", f"127.0.0.1:{self.plane.ports.apiserver}"],
            env={"PYTHONPATH": tests_dir},
        )
        slice_body = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes-realnode",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "kubernetes",
                    "endpointslice.kubernetes.io/managed-by": "realnode.slm-operator.io",
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        with kube.api_client(self.plane.kubeconfig) as api:
            discovery = client.DiscoveryV1Api(api)
            with contextlib.suppress(kube.ApiException):
                discovery.delete_namespaced_endpoint_slice("kubernetes-realnode", "default")
            body = client.V1EndpointSlice.from_dict(slice_body)
            assert body is not None
            discovery.create_namespaced_endpoint_slice("default", body)

    def _start_kube_proxy(self, deadline: float) -> None:
        ports = self.ports
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self._kubeconfig("kube-proxy"))},
            "hostnameOverride": NODE_NAME,
            "mode": "iptables",
            "clusterCIDR": POD_CIDR,
            "nodePortAddresses": [f"{NODE_IP}/32"],
            "healthzBindAddress": f"127.0.0.1:{ports.proxy_healthz}",
            "metricsBindAddress": f"127.0.0.1:{ports.proxy_metrics}",
            # Leave the host's conntrack sysctls alone.
            "conntrack": {
                "maxPerCore": 0,
                "min": 0,
                "tcpEstablishedTimeout": "0s",
                "tcpCloseWaitTimeout": "0s",
            },
            "iptables": {"localhostNodePorts": False, "syncPeriod": "30s", "minSyncPeriod": "0s"},
        }
        path = self.dir / "kube-proxy.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        self.progress("starting kube-proxy (iptables mode)")
        self._start("kube-proxy", [str(self.bins.kube_proxy), f"--config={path}", "--v=1"])
        url = f"http://127.0.0.1:{ports.proxy_healthz}/healthz"
        self._wait("kube-proxy", deadline, lambda: _http_ok(url))

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.processes[name].start(
            argv, cwd=self.dir, die_with_parent=self.attached, env={**self._env(), **(env or {})}
        )

    def _wait(self, component: str, deadline: float, ready: Callable[[], bool]) -> None:
        while time.monotonic() < deadline:
            if not self.processes[component].running():
                raise RealNodeError(f"{component} exited; see {self.processes[component].log_file}")
            with contextlib.suppress(kube.ApiException, OSError, subprocess.SubprocessError):
                if ready():
                    return
            time.sleep(0.5)
        raise RealNodeError(f"timed out waiting for {component}; see {self.processes[component].log_file}")

    # ---- stop steps --------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Delete the node's pods through the API while the kubelet runs, so that it tears them down the
        normal way (CNI DEL, volumes unmounted); then the Node, and our EndpointSlice. Skipped when the
        apiserver does not answer (a killed session's apiserver may still be shutting down)."""
        if not (self.plane.kubeconfig.is_file() and self.plane.processes["kube-apiserver"].running()):
            return
        timeout = _API_TIMEOUT
        try:
            with kube.api_client(self.plane.kubeconfig) as api:
                client.VersionApi(api).get_code(_request_timeout=timeout)  # answers at all?
                core = client.CoreV1Api(api)
                kubelet_up = self.processes["kubelet"].running() and self.processes["containerd"].running()
                grace = 2 if kubelet_up else 0
                pods = _pods_on_node(core)
                for name, namespace in pods:
                    with contextlib.suppress(kube.ApiException):
                        core.delete_namespaced_pod(name, namespace, grace_period_seconds=grace, _request_timeout=5)
                deadline = time.monotonic() + (60 if kubelet_up else 5)
                while pods and time.monotonic() < deadline:
                    time.sleep(0.5)
                    pods = _pods_on_node(core)
                if pods:
                    self.progress(f"{len(pods)} pods still on {NODE_NAME}; removing them without the kubelet")
                    for name, namespace in pods:
                        with contextlib.suppress(kube.ApiException):
                            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0, _request_timeout=5)
                with contextlib.suppress(kube.ApiException):
                    core.delete_node(NODE_NAME, _request_timeout=timeout)
                with contextlib.suppress(kube.ApiException):
                    client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice(
                        "kubernetes-realnode", "default", _request_timeout=timeout
                    )
        except Exception as error:  # an apiserver going away answers in many ways (urllib3, ssl, API errors)
            self.progress(f"could not delete the node's pods through the API ({type(error).__name__}); going on")

    def _proxy_cleanup(self) -> None:
        if self.bins.kube_proxy.exists():
            result = _run([str(self.bins.kube_proxy), "--cleanup", "--v=0"], check=False, timeout=60)
            if result.returncode != 0:
                self.progress(f"kube-proxy --cleanup: {result.stderr.strip()[-300:]}")

    def _remove_containers(self) -> None:
        """Kill and delete whatever containers containerd still has (the kubelet normally removed them)."""
        if not self.processes["containerd"].running():
            config = self.dir / "containerd.toml"
            if not config.is_file() or not (RUN_DIR / "containerd").is_dir():
                return
            # A crash left containerd's state (and maybe running containers) behind: start it to clean up.
            self._start("containerd", [_which("containerd") or "containerd", "--config", str(config)])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.ctr("version", check=False, timeout=10).returncode != 0:
                time.sleep(0.5)
        namespaces = _run(["ctr", "--address", str(self.socket), "namespaces", "list", "-q"], check=False)
        for namespace in namespaces.stdout.split():
            ctr = ["ctr", "--address", str(self.socket), "--namespace", namespace]
            for task in _run([*ctr, "tasks", "list", "-q"], check=False).stdout.split():
                _run([*ctr, "tasks", "kill", "--signal", "SIGKILL", task], check=False)
            for task in _run([*ctr, "tasks", "list", "-q"], check=False).stdout.split():
                _run([*ctr, "tasks", "delete", "--force", task], check=False)
            containers = _run([*ctr, "containers", "list", "-q"], check=False).stdout.split()
            if containers:
                _run([*ctr, "containers", "delete", *containers], check=False)

    def _kill_shims(self) -> None:
        """Last resort after containerd stopped: runc force-deletes the containers still in its state (their
        processes die), then the shims left go."""
        for root in sorted((RUN_DIR / "runc").glob("*")):
            listing = _run(["runc", "--root", str(root), "list", "-q"], check=False).stdout.split()
            for container in listing:
                _run(["runc", "--root", str(root), "delete", "--force", container], check=False)
        for pid, _command in _our_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def _unmount(self) -> None:
        roots = [RUN_DIR, KUBELET_ROOT.parent, self.containerd_root]
        for _ in range(3):
            points = [point for point in _mountpoints() if _under(point, roots)]
            if not points:
                return
            for point in reversed(points):
                if _run(["umount", point], check=False).returncode != 0:
                    _run(["umount", "--lazy", point], check=False)

    def _teardown_network(self) -> None:
        links = _run(["ip", "-o", "link", "show", "master", BRIDGE], check=False).stdout
        for line in links.splitlines():
            _run(["ip", "link", "delete", line.split(":")[1].strip().split("@")[0]], check=False)
        _run(["ip", "link", "delete", BRIDGE], check=False)
        _run(["ip", "route", "delete", "unreachable", KWOK_POD_CIDR], check=False)

    def _restore_host(self) -> None:
        baseline = self._baseline()
        for command in ("iptables", "ip6tables"):
            before = (baseline.get("iptables") or {}).get(command) or {}
            _remove_new_chains(command, before)
        now = _read_sysctls()
        for name, value in (baseline.get("sysctls") or {}).items():
            if now.get(name) not in (None, value):
                with contextlib.suppress(OSError):
                    (Path("/proc/sys") / name).write_text(f"{value}\n", encoding="utf-8")
        existed = set(baseline.get("cgroups") or [])
        for top in _cgroup_dirs():
            if str(top) not in existed:
                for path in sorted(top.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                    if path.is_dir():
                        with contextlib.suppress(OSError):
                            path.rmdir()
                with contextlib.suppress(OSError):
                    top.rmdir()
        logs = self.dir / "pod-logs"
        if _CONTAINER_LOG_LINKS.is_dir():
            for link in _CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and str(Path(os.readlink(link))).startswith(str(logs)):
                    link.unlink()
        for created in baseline.get("created_dirs") or []:
            path = Path(created)
            for folder in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    folder.rmdir()
            with contextlib.suppress(OSError):
                path.rmdir()

    def _release(self) -> None:
        for name in COMPONENTS:
            self.processes[name].pid_file.unlink(missing_ok=True)
        if _mountpoints_under([RUN_DIR, KUBELET_ROOT.parent]):
            self.progress(f"mounts left under {RUN_DIR} or {KUBELET_ROOT.parent}; keeping them")
            return
        shutil.rmtree(KUBELET_ROOT.parent, ignore_errors=True)
        shutil.rmtree(RUN_DIR, ignore_errors=True)


def _mountpoints_under(roots: list[Path]) -> list[str]:
    return [point for point in _mountpoints() if _under(point, roots)]


def _remove_new_chains(command: str, before: dict[str, list[str]]) -> None:
    """Remove chains named KUBE-*/CNI-* that did not exist before the node started, with the rules that
    jump to them from other chains."""
    now = _iptables_rules(command)
    if not now:
        return
    for table, rules in now.items():
        new = {c for c in _chains(rules) - _chains(before.get(table, [])) if c.startswith(_OUR_CHAIN_PREFIXES)}
        if not new:
            continue
        for line in rules:
            parts = shlex.split(line)
            if parts[:1] == ["-A"] and parts[1] not in new and any(target in new for target in parts[2:]):
                _run([command, "-w", "5", "-t", table, "-D", *parts[1:]], check=False)
        for chain in new:
            _run([command, "-w", "5", "-t", table, "-F", chain], check=False)
        for chain in new:
            _run([command, "-w", "5", "-t", table, "-X", chain], check=False)


def _pods_on_node(core: client.CoreV1Api) -> list[tuple[str, str]]:
    """(name, namespace) of every pod bound to the real node."""
    selector = f"spec.nodeName={NODE_NAME}"
    pods = core.list_pod_for_all_namespaces(field_selector=selector, _request_timeout=_API_TIMEOUT).items
    return [(str(pod.metadata.name), str(pod.metadata.namespace)) for pod in pods if pod.metadata]


def _node_ready(api: client.ApiClient) -> bool:
    try:
        node = client.CoreV1Api(api).read_node(NODE_NAME)
    except kube.ApiException as error:
        if error.status == 404:
            return False
        raise
    conditions = (node.status.conditions if node.status else None) or []
    taints = (node.spec.taints if node.spec else None) or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    return ready and not any(t.key.startswith("node.kubernetes.io/") for t in taints)


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return bool(response.status == 200)
