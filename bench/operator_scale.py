#!/usr/bin/env python3
"""The operator at scale (issues 9, 18): N SLMDeployments applied to a real control plane, timed and counted, against
a bare client applying the same objects to the same control plane in the same run.

    .venv/bin/python bench/operator_scale.py                                   # 1 ... 1000, default and raised limits
    .venv/bin/python bench/operator_scale.py --counts 1 10 --limits default    # a quick look
    .venv/bin/python bench/operator_scale.py --counts 500 --runs-large 3 --steady-seconds 60

The baseline (issue 18): before each operator run of N, the objects that `render_all` makes for the same N
SLMDeployments (without owner references: no SLMDeployment exists to own them) are server-side applied by a plain
aiohttp client (_cluster.AsyncKube) with the number of requests in flight that applied fastest in a sweep at the
start (--concurrency; the benchmark's own creates of SLMDeployments use it too). Reported: objects/s of each
(apply_throughput_ratio = operator ÷ bare), and the bare client's time until every Deployment is Available against
the operator's time until every SLMDeployment is Ready (ready_over_available). Each --limits setting (the client
rate limits of kube-controller-manager and kube-scheduler, cluster.ClientLimits: Kubernetes' defaults, or raised
tenfold) gets its own control plane. After each operator run the operator is restarted over the Ready
SLMDeployments: time until it has reconciled each once, and its writes meanwhile (restart); idle_cpu_percent is the
operator's CPU in the steady window.

One control plane for the whole benchmark (tests/cluster: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok nodes; built by `make cluster-bins`), under .state/bench/cluster-<pid>/ and stopped at
the end, also on Ctrl-C or SIGTERM (its state directory is deleted unless --keep-state or a run failed). See
bench/_cluster.py for the three benchmark-only changes (audit log, wider service CIDR, extra kwok nodes).

Every run is fresh: a new namespace, a new `slm operator run` process (its own service account, a new leader
Lease, SLM_OPERATOR_RESYNC_SECONDS=--resync-seconds), N copies of examples/gemma3-270m.yaml named model-000 ... with
small requests (100m CPU, 128Mi) so the simulated nodes are not the limit. Afterwards the operator is stopped
and the SLMDeployments and namespace deleted; the next run creates nothing before the garbage collector has
removed every Deployment, ReplicaSet, Service and Pod they owned. One SLMDeployment is created and deleted
before the first run (no operator running) because the apiserver's first create of a new kind is slow.
A count runs --runs times (--runs-large times from --large-from SLMDeployments on); each figure is the median
with min and max over the runs. seconds_to_applied / operator_objects_per_second: from the first create until
the first apply of the last owned object was answered (audit log), and the owned objects per second that gives.

The figures:

- seconds_to_deployments: from the first create until every Deployment exists (a watch in the benchmark).
- seconds_to_ready: from the first create until every SLMDeployment reports phase Ready for its generation.
  Pods are Ready at once under kwok; the operator follows its Deployments into status as they change (before
  8a6dd2d only on its resync timer, which added up to one resync period).
- api_requests_per_slm: the operator's requests to the apiserver from the first create until it settled (all
  Ready, then no operator write for --settle-seconds, at most --settle-limit), divided by N. Counted exactly
  from the kube-apiserver audit log, which records every request of the operator's service account and
  nothing else (nothing from the benchmark, kwok or the controllers). Leader-election traffic (a GET and a
  PUT of the Lease every 5 s, whatever N) is left out and shown as lease_requests. api_requests_per_reconcile
  divides the same count by the reconciles in the operator's slm_operator_reconciles_total (create handler
  and resync timer runs). api_requests_by_verb and api_requests_by_resource are the median run's; verbs are
  spelt as in apiserver_request_total, except that server-side apply is counted as PATCH (the audit log does
  not tell apply from other patches; operator_writes_by_kind, from slm_operator_api_writes_total, does).
- steady_state_writes: writes (POST, PUT, PATCH, DELETE) by the operator in the --steady-seconds after the
  settling, from the same audit log, Lease renewals excluded (shown as steady_state_lease_writes). 0 for a
  correct operator; reported, not asserted. steady_state_reconciles shows the timer did run meanwhile.
- operator_rss_mib / operator_peak_rss_mib: VmRSS and VmHWM of the operator process from /proc/<pid>/status
  at the end of the steady window.

Output: JSON in --out (default .state/bench/operator_scale.json), progress on stderr, a summary on stdout.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any

import yaml
from _cluster import (
    REPO_ROOT,
    AsyncKube,
    AuditedControlPlane,
    BenchOperator,
    Request,
    audit_requests,
    cpu_nodes_for,
    write_operator_kubeconfig,
)
from benchlib import load_average, machine
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from prometheus_client.parser import text_string_to_metric_families

from cluster import ClientLimits, kube, load_versions
from cluster.controlplane import reap_stale
from cluster.paths import BUILD_SCRIPT
from slm_operator.api.enums import Accelerator
from slm_operator.api.errors import validate_manifest
from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.crd import crd_manifest
from slm_operator.render import RenderOptions, render_all
from slm_operator.settings import OperatorSettings

BENCH_STATE = REPO_ROOT / ".state" / "bench"
EXAMPLE = REPO_ROOT / "examples" / "gemma3-270m.yaml"
SMALL_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}}
MANAGED = "app.kubernetes.io/managed-by=slm-operator"
LIMITS = {"default": ClientLimits(), "raised": ClientLimits.raised()}
USER_AGENT = "slm-bench/operator-scale"
_START = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


# ---- arguments ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 100, 500, 1000], help="SLMDeployments per run")
    parser.add_argument(
        "--limits",
        nargs="+",
        choices=sorted(LIMITS),
        default=["default", "raised"],
        help="client rate limits of kube-controller-manager and kube-scheduler: one control plane each",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[4, 16, 64],
        help="requests in flight tried for the bare client (and the benchmark's creates); the fastest is used",
    )
    parser.add_argument("--no-baseline", action="store_true", help="skip the bare-client baseline runs")
    parser.add_argument("--no-restart", action="store_true", help="skip the operator restart after each run")
    parser.add_argument("--runs", type=int, default=1, help="runs of each count below --large-from")
    parser.add_argument("--runs-large", type=int, default=1, help="runs of each count from --large-from on")
    parser.add_argument("--large-from", type=int, default=500, help="counts from here on run --runs-large times")
    parser.add_argument("--steady-seconds", type=float, default=30.0, help="steady-state window after Ready")
    parser.add_argument(
        "--settle-seconds", type=float, default=2.0, help="after all Ready: quiet time (no operator write) to wait for"
    )
    parser.add_argument("--settle-limit", type=float, default=60.0, help="give up waiting for quiet after this")
    parser.add_argument("--resync-seconds", type=float, default=10.0, help="the operator's SLM_OPERATOR_RESYNC_SECONDS")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one run may take to reach Ready")
    parser.add_argument("--out", type=Path, default=BENCH_STATE / "operator_scale.json", help="JSON result file")
    parser.add_argument("--keep-state", action="store_true", help="keep the control plane's state directory")
    args = parser.parse_args(argv)
    if min(args.counts) < 1 or min(args.runs, args.runs_large) < 1:
        parser.error("counts and runs must be at least 1")
    return args


def runs_for(count: int, args: argparse.Namespace) -> int:
    return int(args.runs_large if count >= args.large_from else args.runs)


# ---- the SLMDeployments ---------------------------------------------------------------------------------------


def slm_manifests(count: int) -> list[dict[str, Any]]:
    """`count` copies of the Gemma example with small resource requests, named model-000 ..."""
    base = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    base["spec"]["resources"] = SMALL_RESOURCES
    manifests = []
    for index in range(count):
        manifest = copy.deepcopy(base)
        manifest["metadata"] = {"name": f"model-{index:03d}"}
        manifests.append(manifest)
    return manifests


def slm_ready(slm: dict[str, Any]) -> bool:
    status = slm.get("status") or {}
    return bool(status.get("phase") == "Ready" and status.get("observedGeneration") == slm["metadata"]["generation"])


def install_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    body = crd_manifest()
    ext.create_custom_resource_definition(body)  # type: ignore[arg-type]  # a dict is a valid body
    name = body["metadata"]["name"]

    def established() -> bool:
        status = ext.read_custom_resource_definition(name).status
        return any(
            c.type == "Established" and c.status == "True" for c in (status.conditions if status else None) or []
        )

    wait_for("the CRD to be Established", established, timeout=60)
    wait_for("SLMDeployments to be served", lambda: servable(api), timeout=60)


def servable(api: client.ApiClient) -> bool:
    """Lists answer (right after the CRD, the apiserver says 429 "storage is (re)initializing" for a while)."""
    try:
        client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL, limit=1)
    except ApiException as error:
        if error.status == 429:
            return False
        raise
    return True


def warm_up(api: client.ApiClient) -> None:
    """Create and delete one SLMDeployment before any operator runs: the apiserver's first create of a new
    kind is slow (about 2 s here), which would otherwise land in the first run's figures."""
    namespace = "bench-warm-up"
    create_namespace(api, namespace)
    create_slms(api, namespace, slm_manifests(1))
    clear_namespace(api, namespace)


def wait_for(what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# ---- watching a namespace -------------------------------------------------------------------------------------


class Tracker:
    """Watches one resource in one namespace and notes when each object first satisfies `done`.

    A watch (not polling) keeps the benchmark's own load on the apiserver small; it restarts on errors and,
    without a resourceVersion, replays current objects as ADDED, so nothing is missed."""

    def __init__(
        self,
        api: client.ApiClient,
        resource: tuple[str, str, str],
        namespace: str,
        done: Callable[[dict[str, Any]], bool],
        label_selector: str = "",
    ) -> None:
        self._custom = client.CustomObjectsApi(api)  # works for built-in kinds too, and yields plain dicts
        self._resource = resource
        self._namespace = namespace
        self._done = done
        self._selector = label_selector
        self.times: dict[str, float] = {}
        self._target = 0
        self._reached = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{resource[2]}", daemon=True)

    def start(self, target: int) -> None:
        self._target = target
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; it does at its next event or when the server ends the watch (5 s at most)."""
        self._stop.set()

    def wait(self, timeout: float, alive: Callable[[], None]) -> float:
        """The time (epoch seconds) at which the target count was reached; `alive` raises when hope is lost."""
        deadline = time.monotonic() + timeout
        while not self._reached.wait(1.0):
            alive()
            if time.monotonic() > deadline:
                what = f"{len(self.times)}/{self._target} {self._resource[2]}"
                raise TimeoutError(f"{what} done after {timeout:.0f}s in namespace {self._namespace}")
        return max(self.times.values())

    def _run(self) -> None:
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                resource_version = self._watch_once(resource_version)
            except Exception as error:  # dropped connection, 410 Gone ...: start over from the current state
                if not self._stop.is_set():
                    progress(f"watch of {self._resource[2]} restarts: {error}")
                resource_version = None
                time.sleep(0.5)

    def _watch_once(self, resource_version: str | None) -> str | None:
        group, version, plural = self._resource
        stream = watch.Watch().stream(
            self._custom.list_namespaced_custom_object,
            group,
            version,
            self._namespace,
            plural,
            label_selector=self._selector,
            resource_version=resource_version,
            timeout_seconds=5,
        )
        for event in stream:
            obj = event["object"]
            if event["type"] == "ERROR":
                raise RuntimeError(obj.get("message", "watch error"))
            resource_version = obj["metadata"]["resourceVersion"]
            name = obj["metadata"]["name"]
            if event["type"] != "DELETED" and name not in self.times and self._done(obj):
                self.times[name] = time.time()
                if len(self.times) >= self._target:
                    self._reached.set()
            if self._stop.is_set():
                break
        return resource_version


# ---- one run ----------------------------------------------------------------------------------------------------


@dataclass
class RunResult:
    count: int
    seconds_to_deployments: float
    seconds_to_ready: float
    seconds_to_settled: float
    reconciles: int
    api_requests: Counter[tuple[str, str]]  # (verb, resource) -> requests, Lease traffic left out
    lease_requests: int
    steady_writes: Counter[tuple[str, str]]
    steady_lease_writes: int
    steady_reconciles: int
    rss_mib: float
    peak_rss_mib: float
    operator_writes: dict[str, int] = field(default_factory=dict)  # slm_operator_api_writes_total by verb/kind
    objects_applied: int = 0  # distinct owned objects the operator applied
    seconds_to_applied: float = 0.0  # from the first create until the last owned object's first apply answered
    idle_cpu_share: float = 0.0  # operator CPU seconds per second in the steady window
    restart: dict[str, Any] = field(default_factory=dict)
    # From an SLMDeployment's event to its applies, per stage (slm_operator_stage_seconds): mean s, total s, count
    stages: dict[str, dict[str, float]] = field(default_factory=dict)
    apiserver_apply_seconds: float = 0.0  # mean time the apiserver took to answer the operator's applies (audit log)

    @property
    def objects_per_second(self) -> float:
        return self.objects_applied / self.seconds_to_applied if self.seconds_to_applied else float("nan")

    @property
    def api_requests_total(self) -> int:
        return sum(self.api_requests.values())

    @property
    def api_requests_per_slm(self) -> float:
        return self.api_requests_total / self.count

    @property
    def api_requests_per_reconcile(self) -> float:
        return self.api_requests_total / self.reconciles if self.reconciles else float("nan")


def operator_counters(operator: BenchOperator) -> tuple[int, dict[str, int]]:
    """(reconciles so far, writes so far by "verb kind") from the operator's own /metrics."""
    reconciles = 0
    writes: dict[str, int] = {}
    for family in text_string_to_metric_families(operator.metrics_text()):
        for sample in family.samples:
            if sample.name == "slm_operator_reconciles_total":
                reconciles += int(sample.value)
            elif sample.name == "slm_operator_api_writes_total":
                key = f"{sample.labels['verb']} {sample.labels['kind']}"
                writes[key] = writes.get(key, 0) + int(sample.value)
    return reconciles, writes


def operator_stages(operator: BenchOperator) -> dict[str, tuple[float, int]]:
    """stage -> (seconds, observations) so far of the operator's slm_operator_stage_seconds histogram."""
    stages: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(operator.metrics_text()):
        for sample in family.samples:
            if sample.name in ("slm_operator_stage_seconds_sum", "slm_operator_stage_seconds_count"):
                entry = stages.setdefault(sample.labels["stage"], [0.0, 0.0])
                entry[sample.name.endswith("_count")] += sample.value
    return {stage: (total, int(count)) for stage, (total, count) in stages.items()}


def stage_means(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """Per stage between two readings of operator_stages: mean seconds, total seconds, observations."""
    means: dict[str, dict[str, float]] = {}
    for stage, (total, count) in after.items():
        total -= before.get(stage, (0.0, 0))[0]
        count -= before.get(stage, (0.0, 0))[1]
        if count:
            means[stage] = {"mean": round(total / count, 4), "total": round(total, 2), "count": count}
    return means


def requests_between(audit_log: Path, start: float, end: float) -> list[Request]:
    return [r for r in audit_requests(audit_log) if start <= r.received < end]


def wait_quiet(audit_log: Path, quiet: float, limit: float) -> float:
    """Wait until the operator has sent no write (Lease renewals aside) for `quiet` seconds; the moment it
    became quiet, or the moment `limit` ran out."""
    deadline = time.time() + limit
    while True:
        now = time.time()
        writes = [r.received for r in audit_requests(audit_log) if r.write and not r.lease]
        last_write = max(writes, default=0.0)
        if now - last_write >= quiet or now >= deadline:
            return now
        time.sleep(min(0.5, last_write + quiet - now))


def tally(requests: list[Request]) -> Counter[tuple[str, str]]:
    return Counter((r.verb, r.resource) for r in requests)


def create_namespace(api: client.ApiClient, name: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    wait_for(f"service account {name}/default", lambda: not kube.missing_service_account(api, name), 60)


def emptied(api: client.ApiClient, namespace: str) -> bool:
    """No Deployment, ReplicaSet, Service or Pod left in the namespace (what a run's SLMDeployments made)."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    listings: list[Callable[..., Any]] = [
        apps.list_namespaced_deployment,
        apps.list_namespaced_replica_set,
        core.list_namespaced_service,
        core.list_namespaced_pod,
    ]
    return not any(list_objects(namespace, limit=1).items for list_objects in listings)


def clear_namespace(api: client.ApiClient, name: str) -> None:
    """Delete a run's namespace without waiting. Its SLMDeployments go first, at once, so that the next
    operator never sees them, and the garbage collector removes what they own without the namespace
    controller's fixed 5 s delay; the next run waits for that (:func:`emptied`), not for the namespace."""
    client.CustomObjectsApi(api).delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
    core = client.CoreV1Api(api)
    core.delete_namespace(name)  # a terminating namespace admits no new pods ...
    core.delete_collection_namespaced_pod(name, grace_period_seconds=0)  # ... and simulated ones need no grace


def create_slms(api: client.ApiClient, namespace: str, manifests: list[dict[str, Any]]) -> None:
    custom = client.CustomObjectsApi(api)
    for manifest in manifests:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, manifest)


@contextmanager
def trackers(api: client.ApiClient, namespace: str, count: int) -> Iterator[tuple[Tracker, Tracker]]:
    deployments = Tracker(api, ("apps", "v1", "deployments"), namespace, lambda _: True, MANAGED)
    slms = Tracker(api, (GROUP, VERSION, PLURAL), namespace, slm_ready)
    deployments.start(count)
    slms.start(count)
    try:
        yield deployments, slms
    finally:
        deployments.stop()
        slms.stop()


@dataclass(frozen=True)
class Context:
    """What every run needs: the cluster, the operator's credentials, the bare client, the settings."""

    api: client.ApiClient
    plane: AuditedControlPlane
    operator_kubeconfig: Path
    args: argparse.Namespace
    bare: AsyncKube
    concurrency: int  # the bare client's best (also used for the benchmark's own creates of SLMDeployments)
    sweep: dict[int, float] = field(default_factory=dict)  # objects/s of the bare client by requests in flight


# ---- the bare-client baseline ---------------------------------------------------------------------------------


def bare_manifests(namespace: str, count: int, replicas: int | None = None) -> list[dict[str, Any]]:
    """What the operator renders for `count` SLMDeployments (render_all, the first reconcile's options), without
    the owner reference: there is no SLMDeployment to own them, and the garbage collector would delete them."""
    settings = OperatorSettings()
    options = RenderOptions(Accelerator.CPU, served_once=False)
    objects = []
    for manifest in slm_manifests(count):
        manifest["metadata"]["namespace"] = namespace
        for obj in render_all(validate_manifest(manifest), settings, options):
            if replicas is not None and obj["kind"] == "Deployment":
                obj["spec"]["replicas"] = replicas
            objects.append(obj)
    return objects


def deployment_available(deployment: dict[str, Any]) -> bool:
    """Available, every replica ready and updated, for the current generation: what the operator calls Ready."""
    status = deployment.get("status") or {}
    replicas = int((deployment.get("spec") or {}).get("replicas", 1))
    available = any(c.get("type") == "Available" and c.get("status") == "True" for c in status.get("conditions") or [])
    return bool(
        available
        and status.get("observedGeneration") == deployment["metadata"]["generation"]
        and int(status.get("readyReplicas") or 0) >= replicas
        and int(status.get("updatedReplicas") or 0) >= replicas
    )


SWEEP_COUNT = 100


def wait_gone(api: client.ApiClient, namespace: str) -> None:
    wait_for(f"the objects of namespace {namespace} to go", lambda: emptied(api, namespace), 300, 0.5)


def sweep(api: client.ApiClient, bare: AsyncKube, levels: Sequence[int]) -> tuple[int, dict[int, float]]:
    """The bare client's apply throughput (objects/s) at each concurrency, applying what 100 SLMDeployments
    render (Deployments at 0 replicas, so no pods load the controllers meanwhile) into a fresh namespace each;
    the fastest level and every level's rate."""
    rates: dict[int, float] = {}
    previous: str | None = None
    for level in levels:
        namespace = f"bench-sweep-{level}-{uuid.uuid4().hex[:4]}"
        create_namespace(api, namespace)
        if previous:
            wait_gone(api, previous)
        objects = bare_manifests(namespace, SWEEP_COUNT, replicas=0)
        began, ended = bare.apply_all(objects, level)
        rates[level] = round(len(objects) / (ended - began), 1)
        progress(f"  bare client, {level} in flight: {rates[level]:.0f} objects/s")
        clear_namespace(api, namespace)
        previous = namespace
    if previous:
        wait_gone(api, previous)
    return max(rates, key=lambda level: rates[level]), rates


@dataclass
class BareResult:
    count: int
    objects: int
    seconds_to_applied: float
    seconds_to_available: float

    @property
    def objects_per_second(self) -> float:
        return self.objects / self.seconds_to_applied


def run_bare(ctx: Context, count: int, index: int, previous: str | None) -> tuple[BareResult, str]:
    """The rendered objects of `count` SLMDeployments applied by the bare client into a fresh namespace: how
    long the applies took, and until every Deployment was Available (the same controllers and scheduler)."""
    namespace = f"bare-{count}-{index}-{uuid.uuid4().hex[:4]}"
    create_namespace(ctx.api, namespace)
    if previous:
        wait_for(f"the objects of namespace {previous} to go", lambda: emptied(ctx.api, previous), 300, 0.5)
    objects = bare_manifests(namespace, count)
    tracker = Tracker(ctx.api, ("apps", "v1", "deployments"), namespace, deployment_available, MANAGED)
    tracker.start(count)
    try:
        began, applied = ctx.bare.apply_all(objects, ctx.concurrency)
        available = tracker.wait(ctx.args.timeout, lambda: None)
    finally:
        tracker.stop()
    clear_namespace(ctx.api, namespace)
    result = BareResult(count, len(objects), applied - began, available - began)
    progress(
        f"  bare: {len(objects)} objects applied in {result.seconds_to_applied:.1f}s "
        f"({result.objects_per_second:.0f}/s), all Available after {result.seconds_to_available:.1f}s"
    )
    return result, namespace


# ---- one operator run -----------------------------------------------------------------------------------------


def run_once(ctx: Context, count: int, index: int, previous: str | None) -> tuple[RunResult, str]:
    """One fresh namespace and operator, `count` SLMDeployments applied, timed and counted, then the operator
    restarted over them. The namespace of the previous run goes away while this operator starts; nothing is
    created before it is gone."""
    tag = f"{count}-{index}-{uuid.uuid4().hex[:4]}"
    namespace = f"bench-{tag}"
    work = ctx.plane.state_dir / "runs" / tag
    work.mkdir(parents=True)
    lease = f"slm-operator-{tag}"
    operator = BenchOperator(ctx.operator_kubeconfig, work, lease, ctx.args.resync_seconds)
    began = time.time()
    operator.start()
    try:
        create_namespace(ctx.api, namespace)
        if previous:
            wait_for(f"the objects of namespace {previous} to go", lambda: emptied(ctx.api, previous), 300, 0.5)
        operator.wait_leading(120)
        wait_watching(ctx.plane.audit_log, began, operator)
        result = measure(ctx, operator, namespace, count)
    finally:
        operator.stop()
    if not ctx.args.no_restart:
        result.restart = restart(ctx, work / "restart", lease, namespace, count)
    clear_namespace(ctx.api, namespace)
    return result, namespace


def wait_watching(audit_log: Path, since: float, operator: BenchOperator, timeout: float = 60) -> None:
    """Until the operator's watch of SLMDeployments has started (kopf lists, then watches)."""

    def watching() -> bool:
        operator.check_alive()
        return any(
            r.verb == "WATCH" and r.resource == PLURAL and r.received >= since for r in audit_requests(audit_log)
        )

    wait_for("the operator to watch SLMDeployments", watching, timeout)


def slm_objects(namespace: str, manifests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "metadata": {**m["metadata"], "namespace": namespace}} for m in manifests]


_NOT_OWNED = {PLURAL, f"{PLURAL}/status", "events", "leases"}


def first_applies(requests: list[Request]) -> dict[tuple[str, str], float]:
    """When each owned object was first applied (the answer's time), by (resource, name)."""
    firsts: dict[tuple[str, str], float] = {}
    for r in requests:
        if r.verb == "PATCH" and r.resource not in _NOT_OWNED and r.code < 300:
            key = (r.resource, r.name)
            firsts[key] = min(firsts.get(key, r.completed), r.completed)
    return firsts


def measure(ctx: Context, operator: BenchOperator, namespace: str, count: int) -> RunResult:
    args, audit_log = ctx.args, ctx.plane.audit_log
    manifests = slm_objects(namespace, slm_manifests(count))
    with trackers(ctx.api, namespace, count) as (deployments, slms):
        reconciles_before, writes_before = operator_counters(operator)
        stages_before = operator_stages(operator)
        started, created = ctx.bare.apply_all(manifests, ctx.concurrency)
        progress(f"  created {count} SLMDeployments in {created - started:.1f}s; waiting for Ready")
        deployed = deployments.wait(args.timeout, operator.check_alive)
        ready = slms.wait(max(1.0, args.timeout - (time.time() - started)), operator.check_alive)
    settled = wait_quiet(audit_log, args.settle_seconds, args.settle_limit)
    reconciles_settled, writes_settled = operator_counters(operator)
    stages = stage_means(stages_before, operator_stages(operator))
    progress(
        f"  Ready after {ready - started:.1f}s, quiet after {settled - started:.1f}s; "
        f"steady state for {args.steady_seconds:g}s"
    )
    cpu_before, steady_began = operator.cpu_seconds(), time.time()
    time.sleep(args.steady_seconds)
    steady_end = time.time()
    idle_cpu = (operator.cpu_seconds() - cpu_before) / (steady_end - steady_began)
    reconciles_end, _ = operator_counters(operator)
    rss, peak = operator.memory_mib()
    applying = requests_between(audit_log, started, settled)
    steady = [r for r in requests_between(audit_log, settled, steady_end) if r.write]
    applies = first_applies(applying)
    owned_applies = [r for r in applying if r.verb == "PATCH" and r.resource not in _NOT_OWNED and r.code < 300]
    return RunResult(
        count=count,
        seconds_to_deployments=deployed - started,
        seconds_to_ready=ready - started,
        seconds_to_settled=settled - started,
        reconciles=reconciles_settled - reconciles_before,
        api_requests=tally([r for r in applying if not r.lease]),
        lease_requests=sum(1 for r in applying if r.lease),
        steady_writes=tally([r for r in steady if not r.lease]),
        steady_lease_writes=sum(1 for r in steady if r.lease),
        steady_reconciles=reconciles_end - reconciles_settled,
        rss_mib=rss,
        peak_rss_mib=peak,
        operator_writes={
            k: v - writes_before.get(k, 0) for k, v in writes_settled.items() if v > writes_before.get(k, 0)
        },
        objects_applied=len(applies),
        seconds_to_applied=max(applies.values(), default=started) - started,
        idle_cpu_share=idle_cpu,
        stages=stages,
        apiserver_apply_seconds=statistics.fmean(r.completed - r.received for r in owned_applies)
        if owned_applies
        else 0.0,
    )


def full_list_seconds(api: client.ApiClient, namespace: str) -> float:
    """How long one full list of what the operator watches in the namespace takes this (admin) client:
    SLMDeployments, Deployments, Services, Pods, parsed into dicts."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    listings: list[Callable[..., Any]] = [
        apps.list_namespaced_deployment,
        core.list_namespaced_service,
        core.list_namespaced_pod,
    ]
    began = time.perf_counter()
    client.CustomObjectsApi(api).list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    for list_objects in listings:
        json.loads(list_objects(namespace, _preload_content=False).data)
    return time.perf_counter() - began


def restart(ctx: Context, work: Path, lease: str, namespace: str, count: int) -> dict[str, Any]:
    """A new operator process over the `count` Ready SLMDeployments: how long until it has reconciled each
    once, and what it wrote meanwhile (nothing, for objects already as desired)."""
    work.mkdir(parents=True)
    operator = BenchOperator(ctx.operator_kubeconfig, work, lease, ctx.args.resync_seconds)
    began = time.time()
    operator.start()
    try:
        operator.wait_leading(120)
        led = time.time()
        wait_for(
            f"the restarted operator to reconcile {count} SLMDeployments",
            lambda: operator_counters(operator)[0] >= count,
            ctx.args.timeout,
            0.1,
        )
        reconciled = time.time()
        time.sleep(ctx.args.settle_seconds)
        everything = requests_between(ctx.plane.audit_log, began, time.time())
        requests = [r for r in everything if not r.lease]
        rss, _ = operator.memory_mib()
    finally:
        operator.stop()
    listing = statistics.median(full_list_seconds(ctx.api, namespace) for _ in range(3))
    writes = [r for r in requests if r.write]
    lease_writes = [r.completed for r in everything if r.lease and r.write and r.code < 300]
    lists = [r.received for r in requests if r.verb == "LIST"]
    result = {
        "seconds_to_reconciled": round(reconciled - began, 3),
        "seconds_leading_to_reconciled": round(reconciled - led, 3),
        # the same from the audit log's answer to the Lease write and from the operator's first list request (the
        # Lease is seen by polling /readyz, the reconciles by polling /metrics, both every 0.1-0.2 s)
        "seconds_lease_to_reconciled": round(reconciled - min(lease_writes, default=led), 3),
        "seconds_listing_to_reconciled": round(reconciled - min(lists, default=led), 3),
        "full_list_seconds": round(listing, 3),
        "writes": len(writes),
        "writes_by_resource": by_resource(tally(writes)),
        "requests_by_resource": by_resource(tally(requests)),
        "rss_mib": round(rss, 1),
    }
    progress(f"  restart: {json.dumps(result)}")
    return result


# ---- summarising --------------------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 3) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def median_run(runs: list[RunResult]) -> RunResult:
    """The run whose request count is the (lower) median: its breakdowns stand for the count."""
    ordered = sorted(runs, key=lambda r: r.api_requests_total)
    return ordered[(len(ordered) - 1) // 2]


def by_verb(requests: Counter[tuple[str, str]]) -> dict[str, int]:
    verbs: Counter[str] = Counter()
    for (verb, _), number in requests.items():
        verbs[verb] += number
    return dict(sorted(verbs.items()))


def by_resource(requests: Counter[tuple[str, str]]) -> dict[str, int]:
    return {f"{verb} {resource}": n for (verb, resource), n in sorted(requests.items())}


def per_slm(requests: Counter[tuple[str, str]], count: int) -> dict[str, float]:
    return {f"{verb} {resource}": round(n / count, 2) for (verb, resource), n in sorted(requests.items())}


def summarise(count: int, runs: list[RunResult], bare: list[BareResult]) -> dict[str, Any]:
    middle = median_run(runs)
    writes = Counter({k: v for k, v in middle.api_requests.items() if k[0] in ("POST", "PUT", "PATCH", "DELETE")})
    summary: dict[str, Any] = {
        "count": count,
        "runs": len(runs),
        "seconds_to_deployments": spread([r.seconds_to_deployments for r in runs]),
        "seconds_to_ready": spread([r.seconds_to_ready for r in runs]),
        "api_requests_per_slm": spread([r.api_requests_per_slm for r in runs]),
        "api_requests_by_verb": by_verb(middle.api_requests),
        "steady_state_writes": spread([sum(r.steady_writes.values()) for r in runs]),
        "operator_rss_mib": spread([r.rss_mib for r in runs], 1),
        "operator_peak_rss_mib": spread([r.peak_rss_mib for r in runs], 1),
        "idle_cpu_percent": spread([100 * r.idle_cpu_share for r in runs], 2),
        "operator_objects_per_second": spread([r.objects_per_second for r in runs], 1),
        "writes_per_slm": round(sum(writes.values()) / count, 2),
        "requests_per_slm_by_resource": per_slm(middle.api_requests, count),
        # beyond the agreed shape: the detail behind the figures
        "api_requests_per_reconcile": spread([r.api_requests_per_reconcile for r in runs]),
        "reconciles": spread([float(r.reconciles) for r in runs], 1),
        "api_requests_by_resource": by_resource(middle.api_requests),
        "operator_writes_by_kind": middle.operator_writes,
        "lease_requests": spread([float(r.lease_requests) for r in runs], 1),
        "steady_state_lease_writes": spread([float(r.steady_lease_writes) for r in runs], 1),
        "steady_state_reconciles": spread([float(r.steady_reconciles) for r in runs], 1),
        "steady_state_writes_by_resource": by_resource(sum((r.steady_writes for r in runs), Counter())),
        "samples": [sample(r) for r in runs],
    }
    restarts = [r.restart for r in runs if r.restart]
    if restarts:
        summary["restart"] = restarts[len(restarts) // 2]
        summary["restart_writes"] = spread([float(r["writes"]) for r in restarts], 1)
    if bare:
        bare_rate = statistics.median(b.objects_per_second for b in bare)
        bare_available = statistics.median(b.seconds_to_available for b in bare)
        summary["bare"] = {
            "runs": len(bare),
            "objects": bare[0].objects,
            "seconds_to_applied": spread([b.seconds_to_applied for b in bare]),
            "objects_per_second": spread([b.objects_per_second for b in bare], 1),
            "seconds_to_available": spread([b.seconds_to_available for b in bare]),
        }
        summary["apply_throughput_ratio"] = round(summary["operator_objects_per_second"]["median"] / bare_rate, 3)
        summary["ready_over_available"] = round(summary["seconds_to_ready"]["median"] / bare_available, 3)
    return summary


def sample(run: RunResult) -> dict[str, Any]:
    return {
        "seconds_to_deployments": round(run.seconds_to_deployments, 3),
        "seconds_to_ready": round(run.seconds_to_ready, 3),
        "seconds_to_settled": round(run.seconds_to_settled, 3),
        "seconds_to_applied": round(run.seconds_to_applied, 3),
        "objects_applied": run.objects_applied,
        "api_requests": run.api_requests_total,
        "reconciles": run.reconciles,
        "steady_state_writes": sum(run.steady_writes.values()),
        "idle_cpu_percent": round(100 * run.idle_cpu_share, 2),
        "operator_rss_mib": round(run.rss_mib, 1),
        "operator_peak_rss_mib": round(run.peak_rss_mib, 1),
        "stages": run.stages,
        "apiserver_apply_seconds": round(run.apiserver_apply_seconds, 4),
    }


def versions() -> dict[str, str]:
    pinned = load_versions()
    return {
        "kubernetes": pinned.kubernetes,
        "etcd": pinned.etcd,
        "kwok": pinned.kwok,
        "kopf": metadata.version("kopf"),
        "python": platform.python_version(),
    }


@dataclass(frozen=True)
class Started:
    """When the benchmark began and how busy the machine was then (the report shows the noise)."""

    date: str
    load_before: list[float]


def report(
    args: argparse.Namespace, started: Started, settings: list[dict[str, Any]], wall: float, error: str | None
) -> dict[str, Any]:
    document: dict[str, Any] = {
        "name": "operator_scale",
        "runs": {"small": args.runs, "large": args.runs_large},
        "steady_seconds": args.steady_seconds,
        "versions": versions(),
        # one entry per client-rate-limit setting of kube-controller-manager and kube-scheduler
        "settings": settings,
        "results": settings[0]["results"] if settings else [],
        "date": started.date,
        "machine": machine(),
        "load_before": started.load_before,
        "load_after": load_average(),
        "settle_seconds": args.settle_seconds,
        "resync_seconds": args.resync_seconds,
        "large_from": args.large_from,
        "wall_seconds": round(wall, 1),
        "request_source": "kube-apiserver audit log of the operator's service account (Lease traffic apart)",
    }
    if error:
        document["incomplete"] = error
    return document


def print_summary(settings: list[dict[str, Any]], wall: float) -> None:
    header = f"{'limits':>7} {'count':>5} {'ready s':>8} {'bare s':>7} {'ratio':>6} {'apply/s':>8} {'bare/s':>7} "
    print(header + f"{'ratio':>6} {'w/slm':>6} {'steady w':>8} {'idle %':>7} {'rss MiB':>8} {'restart w':>9}")
    for setting in settings:
        for r in setting["results"]:
            bare = r.get("bare") or {}
            print(
                f"{setting['name']:>7} {r['count']:>5} {r['seconds_to_ready']['median']:>8.2f} "
                f"{(bare.get('seconds_to_available') or {}).get('median', float('nan')):>7.2f} "
                f"{r.get('ready_over_available', float('nan')):>6.2f} "
                f"{r['operator_objects_per_second']['median']:>8.1f} "
                f"{(bare.get('objects_per_second') or {}).get('median', float('nan')):>7.1f} "
                f"{r.get('apply_throughput_ratio', float('nan')):>6.2f} {r['writes_per_slm']:>6.2f} "
                f"{r['steady_state_writes']['median']:>8g} {r['idle_cpu_percent']['median']:>7.2f} "
                f"{r['operator_rss_mib']['median']:>8.1f} {(r.get('restart') or {}).get('writes', '-')!s:>9}"
            )
    print(f"medians; wall time {wall:.0f}s")


# ---- the whole benchmark --------------------------------------------------------------------------------------------


def _interrupt(signum: int, _: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def bench_cluster(args: argparse.Namespace, limits: str) -> Iterator[Context]:
    """A fresh control plane with the CRD and the operator's identity, the controller-manager's and scheduler's
    client rate limits set to `limits`; stopped (and by default deleted) after."""
    for stale in reap_stale(BENCH_STATE, prefix="cluster-"):
        progress(f"stopped a control plane left by a dead benchmark: {stale}")
    plane = AuditedControlPlane(
        BENCH_STATE / f"cluster-{os.getpid()}-{limits}", cpu_nodes_for(max(args.counts)), progress, LIMITS[limits]
    )
    if plane.bins.missing():
        raise SystemExit(f"control-plane binaries missing; build them with `make cluster-bins` ({BUILD_SCRIPT})")
    failed = True
    try:
        plane.start()
        with kube.api_client(plane.kubeconfig) as api:
            api.user_agent = USER_AGENT
            install_crd(api)
            warm_up(api)
            kubeconfig = write_operator_kubeconfig(api, plane.kubeconfig, plane.state_dir / "operator.kubeconfig")
            bare = AsyncKube(plane.kubeconfig)
            concurrency, rates = sweep(api, bare, args.concurrency)
            progress(f"the bare client applies fastest with {concurrency} requests in flight")
            ctx = Context(api, plane, kubeconfig, args, bare, concurrency)
            ctx.sweep.update(rates)
            yield ctx
        failed = False
    finally:
        plane.stop()
        if failed or args.keep_state:
            progress(f"state and logs kept in {plane.state_dir}")
        else:
            plane.destroy()


def run_setting(
    args: argparse.Namespace,
    limits: str,
    plan: list[tuple[int, int]],
    setting: dict[str, Any],
    checkpoint: Callable[[], None],
) -> None:
    """Every count on one control plane: the bare client's runs, then the operator's, per count; `checkpoint`
    after each count writes what is done so far."""
    with bench_cluster(args, limits) as ctx:
        setting["bare_concurrency"] = ctx.concurrency
        setting["bare_sweep_objects_per_second"] = {str(k): v for k, v in ctx.sweep.items()}
        previous: str | None = None
        for count, runs in plan:
            outcomes, bare = [], []
            for index in range(runs):
                if not args.no_baseline:
                    progress(f"[{limits}] bare client: {count} SLMDeployments' objects ({index + 1}/{runs})")
                    bare_outcome, previous = run_bare(ctx, count, index, previous)
                    bare.append(bare_outcome)
                progress(f"[{limits}] operator: {count} SLMDeployments ({index + 1}/{runs})")
                outcome, previous = run_once(ctx, count, index, previous)
                outcomes.append(outcome)
                progress(f"  {json.dumps(sample(outcome))}")
            setting["results"].append(summarise(count, outcomes, bare))
            checkpoint()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = Started(datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), load_average())
    plan = [(count, runs_for(count, args)) for count in args.counts]
    settings: list[dict[str, Any]] = []
    error: str | None = None
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def checkpoint() -> None:
        wall = time.monotonic() - _START
        document = report(args, started, settings, wall, "interrupted: partial results")
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    try:
        for limits in args.limits:
            setting: dict[str, Any] = {
                "name": limits,
                "client_limits": dataclasses.asdict(LIMITS[limits]),
                "results": [],
            }
            settings.append(setting)
            run_setting(args, limits, plan, setting, checkpoint)
    except (Exception, KeyboardInterrupt) as exc:
        error = f"{type(exc).__name__}: {exc}"
        progress(f"stopped: {error}")
    wall = time.monotonic() - _START
    args.out.write_text(json.dumps(report(args, started, settings, wall, error), indent=2) + "\n", encoding="utf-8")
    progress(f"wrote {args.out}")
    print_summary(settings, wall)
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
