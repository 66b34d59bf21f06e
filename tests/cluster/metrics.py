"""The autoscaling metrics pipeline beside the real node: metrics-server, KEDA and Prometheus as host processes.

- **metrics-server** scrapes the real kubelet's ``/metrics/resource`` (only nodes labelled
  :data:`cluster.realnode.NODE_SELECTOR`: kwok's simulated nodes have no kubelet and an address nothing
  answers on) and serves ``metrics.k8s.io`` (``kubectl top``, the HPA's Resource metrics).
- **KEDA** (operator + metrics adapter) turns ScaledObjects into HPAs and serves ``external.metrics.k8s.io``;
  the operator and the adapter talk gRPC with mutual TLS from a certificate of the cluster CA.
- **Prometheus** discovers EndpointSlices through the test apiserver (``kubernetes_sd_configs``) and scrapes
  Services labelled ``app.kubernetes.io/part-of=slm-operator`` on their port named ``http``, path /metrics,
  every second, relabelled exactly like a Prometheus Operator ServiceMonitor: the targets' series carry
  ``namespace``, ``service``, ``pod``, ``container``, ``endpoint`` (and ``job`` = the Service name).

The two aggregated API servers listen on the real node's address (:data:`cluster.network.NODE_IP`): an
EndpointSlice may not point at loopback, and the apiserver reaches them through their Service's EndpointSlice
(``--enable-aggregator-routing``). Their serving certificates are signed by the cluster CA for
``<service>.<namespace>.svc``, which the APIServices' ``caBundle`` verifies. Everything else binds 127.0.0.1.
Every process gets a client certificate in ``system:masters``.

Network rule: metrics-server only contacts the real node, and Prometheus keeps only targets on the real
node's pod network (an extra first relabelling; simulated kwok pods can be Service endpoints too), so no
traffic leaves the machine.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cluster import kube
from cluster.network import NODE_IP, POD_CIDR
from cluster.paths import Binaries
from cluster.pki import CertKey, issue_certificate, load_ca
from cluster.processes import Process, free_ports, tail
from cluster.realnode import NODE_SELECTOR

if TYPE_CHECKING:
    from cluster.controlplane import ControlPlane

__all__ = [
    "COMPONENTS",
    "KEDA_NAMESPACE",
    "PART_OF_LABEL",
    "PART_OF_VALUE",
    "SCRAPE_PORT_NAME",
    "MetricsPipeline",
    "MetricsPipelineError",
    "PipelinePorts",
    "prometheus_config",
]

COMPONENTS = ("prometheus", "metrics-server", "keda-operator", "keda-adapter")
KEDA_NAMESPACE = "keda"
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF_VALUE = "slm-operator"
SCRAPE_PORT_NAME = "http"
SCRAPE_INTERVAL = "1s"
PROMETHEUS_JOB = f"serviceMonitor/{PART_OF_VALUE}/{SCRAPE_PORT_NAME}"
_FIELD_MANAGER = "slm-metrics-pipeline"
_SLICE_MANAGER = "metrics.slm-operator.io"  # our EndpointSlices: no controller of the cluster touches them
_METRICS_API = "v1beta1.metrics.k8s.io"
_EXTERNAL_API = "v1beta1.external.metrics.k8s.io"


@dataclass(frozen=True)
class _Aggregated:
    """One aggregated API served by a host process: its APIService, Service and EndpointSlice."""

    api_service: str
    group: str
    service: str
    namespace: str

    @property
    def dns_name(self) -> str:  # what the aggregator verifies the serving certificate for
        return f"{self.service}.{self.namespace}.svc"


_METRICS_SERVER = _Aggregated(_METRICS_API, "metrics.k8s.io", "metrics-server", "kube-system")
_KEDA_ADAPTER = _Aggregated(_EXTERNAL_API, "external.metrics.k8s.io", "keda-metrics-apiserver", KEDA_NAMESPACE)

Progress = Callable[[str], None]


class MetricsPipelineError(RuntimeError):
    """The pipeline could not start; the message carries the components' log tails."""


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class PipelinePorts:
    """Ports of the pipeline's processes (the aggregated API servers on NODE_IP, the rest on 127.0.0.1)."""

    prometheus: int
    metrics_server: int
    keda_grpc: int
    keda_operator_metrics: int
    keda_operator_probe: int
    keda_adapter: int
    keda_adapter_metrics: int

    @classmethod
    def pick(cls) -> PipelinePorts:
        return cls(*free_ports(7))


def _pod_network_regex() -> str:
    """A regex for `host:port` addresses on the real node's pod network (POD_CIDR is a /24)."""
    network = ipaddress.ip_network(POD_CIDR)
    if network.prefixlen != 24:
        raise ValueError(f"POD_CIDR {POD_CIDR}: the relabelling below expects a /24")
    prefix = str(network.network_address).rsplit(".", 1)[0].replace(".", r"\.")
    return prefix + r"\.[0-9]+:[0-9]+"


def prometheus_config(kubeconfig: Path) -> dict[str, Any]:
    """The Prometheus configuration: one job like the Prometheus Operator generates for a ServiceMonitor that
    selects `app.kubernetes.io/part-of: slm-operator` in every namespace, endpoint port `http`, path /metrics,
    interval 1s (EndpointSlice discovery role)."""
    meta = "__meta_kubernetes_"
    label = PART_OF_LABEL.replace(".", "_").replace("/", "_").replace("-", "_")
    relabel: list[dict[str, Any]] = [
        # Not a ServiceMonitor rule: the network rule (only the real node's pods; kwok's answer nowhere).
        {"source_labels": ["__address__"], "regex": _pod_network_regex(), "action": "keep"},
        # From here on what prometheus-operator writes for the ServiceMonitor.
        {"source_labels": ["job"], "target_label": "__tmp_prometheus_job_name"},
        {
            "action": "keep",
            "source_labels": [f"{meta}service_label_{label}", f"{meta}service_labelpresent_{label}"],
            "regex": f"({PART_OF_VALUE});true",
        },
        {"action": "keep", "source_labels": [f"{meta}endpointslice_port_name"], "regex": SCRAPE_PORT_NAME},
        {
            "source_labels": [f"{meta}endpointslice_address_target_kind", f"{meta}endpointslice_address_target_name"],
            "separator": ";",
            "regex": "Node;(.*)",
            "replacement": "${1}",
            "target_label": "node",
        },
        {
            "source_labels": [f"{meta}endpointslice_address_target_kind", f"{meta}endpointslice_address_target_name"],
            "separator": ";",
            "regex": "Pod;(.*)",
            "replacement": "${1}",
            "target_label": "pod",
        },
        {"source_labels": [f"{meta}namespace"], "target_label": "namespace"},
        {"source_labels": [f"{meta}service_name"], "target_label": "service"},
        {"source_labels": [f"{meta}pod_name"], "target_label": "pod"},
        {"source_labels": [f"{meta}pod_container_name"], "target_label": "container"},
        {"action": "drop", "source_labels": [f"{meta}pod_phase"], "regex": "(Failed|Succeeded)"},
        {"source_labels": [f"{meta}service_name"], "target_label": "job", "replacement": "${1}"},
        {"target_label": "endpoint", "replacement": SCRAPE_PORT_NAME},
        {"source_labels": ["__address__"], "target_label": "__tmp_hash", "modulus": 1, "action": "hashmod"},
        {"source_labels": ["__tmp_hash"], "regex": "0", "action": "keep"},
    ]
    return {
        "global": {
            "scrape_interval": SCRAPE_INTERVAL,
            "scrape_timeout": SCRAPE_INTERVAL,
            "evaluation_interval": SCRAPE_INTERVAL,
        },
        "scrape_configs": [
            {
                "job_name": PROMETHEUS_JOB,
                "honor_labels": False,
                "honor_timestamps": True,
                "metrics_path": "/metrics",
                "scheme": "http",
                "scrape_interval": SCRAPE_INTERVAL,
                "scrape_timeout": SCRAPE_INTERVAL,
                "kubernetes_sd_configs": [{"role": "endpointslice", "kubeconfig_file": str(kubeconfig)}],
                "relabel_configs": relabel,
            }
        ],
    }


class MetricsPipeline:
    """The metrics pipeline of one control plane (files in `<state dir>/metrics`); needs its real node."""

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
        self.dir = plane.state_dir / "metrics"
        self.processes = {name: Process(name, plane.state_dir) for name in COMPONENTS}

    # ---- what a caller needs -------------------------------------------------------------------------

    @property
    def info_file(self) -> Path:
        return self.dir / "pipeline.json"

    @property
    def ports(self) -> PipelinePorts:
        return PipelinePorts(**json.loads(self.info_file.read_text(encoding="utf-8"))["ports"])

    @property
    def prometheus_url(self) -> str:
        """Prometheus' HTTP API, from the host (and from host processes such as the KEDA operator)."""
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def running(self) -> bool:
        return self.info_file.is_file() and all(p.running() for p in self.processes.values())

    def log_files(self) -> dict[str, Path]:
        return {name: process.log_file for name, process in self.processes.items()}

    def log_tails(self, lines: int = 40) -> dict[str, str]:
        """The last lines of each component's log (for a failed test's report)."""
        return {name: tail(path, lines) for name, path in self.log_files().items() if path.exists()}

    def logs(self, lines: int = 40) -> str:
        """Every component's log tail as one text."""
        return "\n".join(f"----- {name} -----\n{text}" for name, text in self.log_tails(lines).items())

    def query(self, promql: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """An instant query against Prometheus: the `data.result` vector (a list of {metric, value})."""
        url = f"{self.prometheus_url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
        with _no_proxy().open(url, timeout=timeout) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise MetricsPipelineError(f"query {promql!r} failed: {body}")
        return list(body["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        """Prometheus' active scrape targets (`labels`, `health`, `lastError`, `scrapeUrl` ...)."""
        with _no_proxy().open(f"{self.prometheus_url}/api/v1/targets?state=active", timeout=5) as response:
            return list(json.loads(response.read())["data"]["activeTargets"])

    # ---- lifecycle -----------------------------------------------------------------------------------

    def start(self, timeout: float = 180.0) -> None:
        """Start Prometheus, metrics-server, the KEDA operator and adapter, register the two aggregated APIs
        and wait until both are Available. The real node must be running."""
        if self.running():
            self.progress("metrics pipeline already running")
            return
        missing = self.bins.missing_pipeline()
        if missing:
            raise MetricsPipelineError(
                "metrics pipeline binaries are missing: "
                + ", ".join(map(str, missing))
                + "\nbuild them with `make cluster-bins` (hack/cluster/build-bins.sh)"
            )
        if not self.plane.real_node().running():
            raise MetricsPipelineError("the metrics pipeline needs the real node (start it first)")
        started = time.monotonic()
        deadline = started + timeout
        try:
            self._start_once(deadline)
        except Exception as error:
            logs = self.logs(25)
            self.stop()
            raise MetricsPipelineError(f"metrics pipeline failed to start: {error}\n{logs}") from error
        self.progress(f"metrics pipeline ready in {time.monotonic() - started:.1f}s: Prometheus {self.prometheus_url}")

    def stop(self) -> None:
        """Unregister the aggregated APIs (so that discovery and namespace deletion never wait for a server
        that is gone), stop every process, and delete the objects that point at them. Safe at any time."""
        api_up = self.plane.kubeconfig.is_file() and self.plane.processes["kube-apiserver"].running()
        if api_up and (self.info_file.is_file() or any(p.running() for p in self.processes.values())):
            self._kubectl("delete", "apiservice", _METRICS_API, _EXTERNAL_API, "--ignore-not-found", check=False)
        for name in reversed(COMPONENTS):
            process = self.processes[name]
            if process.running():
                self.progress(f"stopping {name}")
            process.stop()
        if api_up and self.info_file.is_file():
            for target in (_METRICS_SERVER, _KEDA_ADAPTER):
                self._kubectl(
                    "delete", "-n", target.namespace, "--ignore-not-found", "--wait=false",
                    f"service/{target.service}", f"endpointslice/{target.service}-host",
                    check=False,
                )  # fmt: skip
        self.info_file.unlink(missing_ok=True)

    # ---- start steps ---------------------------------------------------------------------------------

    def _start_once(self, deadline: float) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir.mkdir(parents=True)
        ports = PipelinePorts.pick()
        self.info_file.write_text(json.dumps({"ports": asdict(ports)}, indent=2) + "\n", encoding="utf-8")
        creds = self._write_credentials()
        self._apply(self._base_objects(ports), "base.yaml")
        self._start_prometheus(deadline)
        self._start_metrics_server(creds, deadline)
        self._register(_METRICS_SERVER, deadline)
        self._start_keda(creds, deadline)
        self._register(_KEDA_ADAPTER, deadline)

    def _pki(self) -> Path:
        return self.plane.state_dir / "pki" / "metrics"

    def _kubeconfig(self, name: str) -> Path:
        return self.plane.state_dir / "kubeconfigs" / f"{name}.kubeconfig"

    def _write_credentials(self) -> dict[str, CertKey]:
        ca = load_ca(self.plane.state_dir / "pki")
        folder = self._pki()
        shutil.rmtree(folder, ignore_errors=True)
        # Client identities (one per component, for the audit log; RBAC-wise all are cluster admins).
        for name, common_name in (
            ("prometheus", "slm-test:prometheus"),
            ("metrics-server", "system:metrics-server"),
            ("keda-operator", "system:serviceaccount:keda:keda-operator"),
            ("keda-adapter", "system:serviceaccount:keda:keda-metrics-server"),
        ):
            pair = issue_certificate(folder, ca, f"{name}-client", common_name, "system:masters")
            kube.write_kubeconfig(self._kubeconfig(name), self.plane.server, ca.cert, pair, name)
        serving = issue_certificate(
            folder, ca, "metrics-server-serving", _METRICS_SERVER.dns_name,
            sans=(f"DNS:{_METRICS_SERVER.dns_name}", f"IP:{NODE_IP}"),
        )  # fmt: skip
        # KEDA's layout: one directory with tls.crt, tls.key, ca.crt, shared by the operator (gRPC server)
        # and the adapter (gRPC client, and the external metrics API server), as its Helm chart does.
        keda_dir = folder / "keda"
        keda = issue_certificate(
            keda_dir, ca, "tls", "keda-operator",
            sans=(
                f"DNS:keda-operator.{KEDA_NAMESPACE}.svc",
                f"DNS:{_KEDA_ADAPTER.dns_name}",
                "IP:127.0.0.1",
                f"IP:{NODE_IP}",
            ),
        )  # fmt: skip
        shutil.copyfile(ca.cert, keda_dir / "ca.crt")
        return {"ca": ca, "metrics-server": serving, "keda": keda}

    def _base_objects(self, ports: PipelinePorts) -> list[dict[str, Any]]:
        """The keda namespace, and for each aggregated API server a selector-less Service with an
        EndpointSlice on NODE_IP:<its port>."""
        objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": KEDA_NAMESPACE}},
        ]
        for target, port in ((_METRICS_SERVER, ports.metrics_server), (_KEDA_ADAPTER, ports.keda_adapter)):
            labels = {"app.kubernetes.io/name": target.service, "app.kubernetes.io/managed-by": _SLICE_MANAGER}
            objects += [
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": target.service, "namespace": target.namespace, "labels": labels},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": port, "protocol": "TCP"}]},
                },
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{target.service}-host",
                        "namespace": target.namespace,
                        "labels": {
                            "kubernetes.io/service-name": target.service,
                            "endpointslice.kubernetes.io/managed-by": _SLICE_MANAGER,
                        },
                    },
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": [NODE_IP], "conditions": {"ready": True}}],
                    "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
                },
            ]
        return objects

    def _start_prometheus(self, deadline: float) -> None:
        config = self.dir / "prometheus.yml"
        document = prometheus_config(self._kubeconfig("prometheus"))
        config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
        port = self.ports.prometheus
        self.progress(f"starting prometheus on 127.0.0.1:{port}")
        self._start(
            "prometheus",
            [
                str(self.bins.prometheus),
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                f"--storage.tsdb.path={self.dir / 'prometheus-data'}",
                "--storage.tsdb.retention.time=6h",
                "--web.enable-lifecycle",
            ],
        )
        self._wait_http("prometheus", f"http://127.0.0.1:{port}/-/ready", deadline)

    def _start_metrics_server(self, creds: dict[str, CertKey], deadline: float) -> None:
        kubeconfig = self._kubeconfig("metrics-server")
        port = self.ports.metrics_server
        selector = ",".join(f"{key}={value}" for key, value in NODE_SELECTOR.items())
        self.progress(f"starting metrics-server on {NODE_IP}:{port} (nodes {selector})")
        self._start(
            "metrics-server",
            [
                str(self.bins.metrics_server),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={port}",
                f"--cert-dir={self.dir / 'metrics-server-certs'}",
                f"--tls-cert-file={creds['metrics-server'].cert}",
                f"--tls-private-key-file={creds['metrics-server'].key}",
                # The kubelet's serving certificate is signed by the cluster CA for its InternalIP.
                f"--kubelet-certificate-authority={creds['ca'].cert}",
                "--kubelet-preferred-address-types=InternalIP",
                "--kubelet-use-node-status-port",
                # Only the real node: kwok's nodes have no kubelet, and their address must not be contacted.
                f"--node-selector={selector}",
                "--metric-resolution=10s",  # its minimum
                "--kubelet-request-timeout=5s",  # below the resolution
                "--profiling=false",
            ],
        )
        self._wait_http("metrics-server", f"https://{NODE_IP}:{port}/livez", deadline, self._tls(creds["ca"]))

    def _start_keda(self, creds: dict[str, CertKey], deadline: float) -> None:
        ports = self.ports
        crds = sorted(self.bins.keda_crds.glob("*.yaml"))
        self.progress(f"applying {len(crds)} KEDA CRDs")
        self._kubectl("apply", "--server-side", "--force-conflicts", *(f"--filename={path}" for path in crds))
        self._kubectl(
            "wait", "--for=condition=Established", "--timeout=60s",
            *(f"crd/{yaml.safe_load(path.read_text(encoding='utf-8'))['metadata']['name']}" for path in crds),
        )  # fmt: skip
        cert_dir = creds["keda"].cert.parent
        env = {
            "WATCH_NAMESPACE": "",  # all namespaces
            "POD_NAMESPACE": KEDA_NAMESPACE,
            "KEDA_CLUSTER_OBJECT_NAMESPACE": KEDA_NAMESPACE,
        }
        self.progress(f"starting keda-operator (gRPC metrics service on 127.0.0.1:{ports.keda_grpc})")
        self._start(
            "keda-operator",
            [
                str(self.bins.keda_operator),
                f"--metrics-bind-address=127.0.0.1:{ports.keda_operator_metrics}",
                f"--health-probe-bind-address=127.0.0.1:{ports.keda_operator_probe}",
                f"--metrics-service-bind-address=127.0.0.1:{ports.keda_grpc}",
                f"--cert-dir={cert_dir}",
                f"--ca-dir={cert_dir}",
                "--enable-cert-rotation=false",
                "--enable-webhook-patching=false",
                "--enable-apiservice-patching=false",
                "--leader-elect=false",
                "--zap-log-level=info",
                "--zap-encoder=console",
            ],
            env={**env, "KUBECONFIG": str(self._kubeconfig("keda-operator"))},
        )
        self._wait_http("keda-operator", f"http://127.0.0.1:{ports.keda_operator_probe}/readyz", deadline)
        adapter = self._kubeconfig("keda-adapter")
        self.progress(f"starting keda-adapter on {NODE_IP}:{ports.keda_adapter}")
        self._start(
            "keda-adapter",
            [
                str(self.bins.keda_adapter),
                f"--lister-kubeconfig={adapter}",
                f"--authentication-kubeconfig={adapter}",
                f"--authorization-kubeconfig={adapter}",
                f"--bind-address={NODE_IP}",
                f"--secure-port={ports.keda_adapter}",
                f"--cert-dir={cert_dir}",
                f"--tls-cert-file={creds['keda'].cert}",
                f"--tls-private-key-file={creds['keda'].key}",
                f"--metrics-service-address=127.0.0.1:{ports.keda_grpc}",
                f"--port={ports.keda_adapter_metrics}",
                "--profiling=false",
                "--zap-log-level=info",
                "--zap-encoder=console",
            ],
            env={**env, "KUBECONFIG": str(adapter)},
        )
        url = f"https://{NODE_IP}:{ports.keda_adapter}/livez"
        self._wait_http("keda-adapter", url, deadline, self._tls(creds["ca"]))

    def _register(self, target: _Aggregated, deadline: float) -> None:
        ca = base64.b64encode((self.plane.state_dir / "pki" / "ca.crt").read_bytes()).decode()
        group, version = target.group, target.api_service.split(".", 1)[0]
        api_service = {
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": target.api_service},
            "spec": {
                "service": {"name": target.service, "namespace": target.namespace, "port": 443},
                "group": group,
                "version": version,
                "caBundle": ca,
                "groupPriorityMinimum": 100,
                "versionPriority": 100,
            },
        }
        self._apply([api_service], f"apiservice-{group}.yaml")
        last = "no status yet"
        while time.monotonic() < deadline:
            self._ensure_alive()
            result = self._kubectl("get", "apiservice", target.api_service, "--output=json", check=False)
            if result.returncode == 0:
                conditions = json.loads(result.stdout).get("status", {}).get("conditions", [])
                available = next((c for c in conditions if c.get("type") == "Available"), None)
                if available and available.get("status") == "True":
                    self.progress(f"{target.api_service} Available")
                    return
                if available:
                    last = f"{available.get('reason')}: {available.get('message')}"
            time.sleep(0.5)
        raise MetricsPipelineError(f"APIService {target.api_service} not Available: {last}")

    # ---- helpers -------------------------------------------------------------------------------------

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        environment = {"NO_PROXY": "*", **(env or {})}
        self.processes[name].start(argv, cwd=self.dir, die_with_parent=self.attached, env=environment)

    def _ensure_alive(self) -> None:
        for name, process in self.processes.items():
            if process.pid_file.is_file() and not process.running():
                raise MetricsPipelineError(f"{name} exited; see {process.log_file}")

    def _tls(self, ca: CertKey) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(ca.cert))

    def _wait_http(self, component: str, url: str, deadline: float, context: ssl.SSLContext | None = None) -> None:
        last = "no answer yet"
        opener = _no_proxy(context)
        while time.monotonic() < deadline:
            self._ensure_alive()
            try:
                with opener.open(url, timeout=3) as response:
                    if response.status == 200:
                        return
                    last = f"HTTP {response.status}"
            except urllib.error.HTTPError as error:
                last = f"HTTP {error.code}: {error.read()[:200]!r}"
            except (urllib.error.URLError, OSError) as error:
                last = str(error)
            time.sleep(0.25)
        raise MetricsPipelineError(f"{component} not healthy at {url}: {last}")

    def _kubectl(self, *args: str, check: bool = True, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bins.kubectl), f"--kubeconfig={self.plane.kubeconfig}", *args]
        env = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, env=env)
        if check and result.returncode != 0:
            raise MetricsPipelineError(f"kubectl {' '.join(args[:3])} failed: {result.stderr.strip()[-2000:]}")
        return result

    def _apply(self, objects: list[dict[str, Any]], name: str) -> None:
        path = self.dir / name
        path.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
        self._kubectl(
            "apply", "--server-side", "--force-conflicts", f"--field-manager={_FIELD_MANAGER}", "-f", str(path)
        )


def _no_proxy(context: ssl.SSLContext | None = None) -> urllib.request.OpenerDirector:
    """A urllib opener that never uses a proxy (everything the pipeline serves is on this machine)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    return urllib.request.build_opener(*handlers)
