"""kopf handlers: the only place where the operator meets kopf. Run with `slm operator run`.

Level-triggered, with events only to act sooner (see docs/operator-scale.md):

- every watch event of an SLMDeployment (the listing after a restart included) and every change of an owned
  Deployment (its pods becoming ready, a rollout moving on, a hand edit or deletion) asks for a reconcile of that
  SLMDeployment at once;
- one resync loop, not a timer per object, runs every ``SLM_OPERATOR_RESYNC_SECONDS`` (ProcessSettings) and asks
  for a reconcile of each SLMDeployment whose inputs changed since its last reconcile (its generation, labels or
  annotations; its status, when it is not what this operator wrote; the resourceVersion of any owned object or
  pod; the cluster's kinds), or whose pods are unschedulable (hardware fallback is a matter of time). That
  restores owned objects edited or deleted by hand and retries failed reconciles; an SLMDeployment with
  unchanged inputs costs a comparison of two tuples, not a render.

SLMDeployments are kept by the event handler (a record per object, cache.py), owned objects and pods by watches of
the operator's own (watch.py) that turn each event into a record at once; both hold only what a reconcile reads.
kopf has no index: with one, kopf holds a restart's whole first listing until every object is indexed, and runs
two handlers per object. Writes go out on the
event loop through one aiohttp session (``AsyncWriter``); kopf itself writes nothing (no change-detecting handlers:
no diff-base or progress annotations, no finalizers).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ctypes
import functools
import gc
import logging
import time
from collections.abc import Coroutine, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import kopf

from slm_operator.api.enums import Phase
from slm_operator.api.errors import ManifestError
from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.controller import metrics
from slm_operator.controller.cache import Cache
from slm_operator.controller.compact import Kept, KeptSLM, canonical, keep, keep_slm
from slm_operator.controller.kube import PLURALS, ApiConnection, AsyncWriter, KubeClient, Writes, load_kube_config
from slm_operator.controller.leader import LeaseElector
from slm_operator.controller.reconcile import LiveObjects, invalid_status, reconcile
from slm_operator.controller.status import transition_events
from slm_operator.controller.watch import Watched, Watcher
from slm_operator.render import OWNED_KINDS
from slm_operator.render.meta import MANAGED_BY
from slm_operator.render.scaling import KEDA_API_VERSION
from slm_operator.settings import OperatorSettings, ProcessSettings, load_settings

__all__: list[str] = []

log = logging.getLogger(__name__)

INSTANCE_LABEL = "app.kubernetes.io/instance"
OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY}
PROCESS = ProcessSettings.from_env()
# How often a cluster without KEDA is asked again whether it serves ScaledObjects now (KEDA installed later).
KEDA_RECHECK_SECONDS = 60.0
LIST_CHUNK = 200  # objects per page of kopf's initial listing of SLMDeployments
WATCH_PAGE = 100  # objects per page of the owned kinds' and pods' listings (at most ~5.5 MiB of pods decoded at once)
WATCH_SECONDS = 300  # a watch request ends after this and is made again (a silently dropped one cannot last)
# The writer's connections per reconcile slot: a reconcile sends its applies at once (a Deployment and a Service for
# most models), which with one connection per slot waited for each other (docs/operator-scale.md, fourth round).
CONNECTIONS_PER_SLOT = 2

Key = tuple[str, str]  # (namespace, name) of an SLMDeployment


def _index_id(kind: str) -> str:
    return f"owned_{kind.lower()}"


def _key(namespace: str | None, labels: Mapping[str, str]) -> Key:
    return (namespace or "", labels.get(INSTANCE_LABEL, ""))


OWNED_SELECTOR = ",".join(f"{k}={v}" for k, v in OWNED.items())
POD_SELECTOR = f"{OWNED_SELECTOR},app.kubernetes.io/component=model-server"
INDEXES = ("slm_bodies", "owned_pods", *(_index_id(kind) for _, kind in OWNED_KINDS))
# Namespaces the operator watches (`slm operator run --namespace`); [None]: the whole cluster.
WATCH_NAMESPACES: list[str | None] = [None]


def _owned_key(obj: Mapping[str, Any]) -> Key:
    meta = obj.get("metadata") or {}
    return _key(meta.get("namespace"), meta.get("labels") or {})


def _keep_pod(obj: Mapping[str, Any]) -> Kept:
    return keep(obj, pod=True)


# The owned kinds and pods are watched by the operator itself (watch.py: each event made a record at once, the body
# dropped); kopf watches only the SLMDeployments. A kind the cluster does not serve (ServiceMonitor without the
# Prometheus Operator) is an empty cache, asked again now and then.
WATCHED: dict[str, Watched[Kept]] = {
    **{
        _index_id(kind): Watched(api_version, kind, PLURALS[kind], OWNED_SELECTOR, _owned_key, keep)
        for api_version, kind in OWNED_KINDS
    },
    "owned_pods": Watched("v1", "Pod", "pods", POD_SELECTOR, _owned_key, _keep_pod),
}


class _NoDiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf builds a diff-base (a deep copy of the body) on every event of every watched object, for
    change-detecting handlers (on.create/update/resume). The operator has none, so there is nothing to build: the
    profile at 100 SLMDeployments had kopf's deep copies at 12% of the operator's CPU. Nothing is stored either."""

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None


# Phases of a model on its way up; the first status of a new SLMDeployment, and a change between two of these phases
# (or of their counters), is written at most once per resync period: a model that becomes Ready within a period has
# its status written once (Ready), one that takes longer shows Pending after a period.
_STARTING = frozenset({Phase.PENDING.value, Phase.DOWNLOADING.value, Phase.LOADING.value})


@dataclass
class Controller:
    """What the reconciles share: settings, clients, the indexes, and per SLMDeployment what was decided."""

    settings: OperatorSettings
    kube: KubeClient  # discovery (synchronous, rare)
    writer: AsyncWriter
    indexes: Mapping[str, Any]
    service_monitor_crd: bool
    keda: bool = False
    keda_checked: float = 0.0
    # The status this operator last wrote (or found right), with the resourceVersion of the body it started from
    # (a watch that has not caught up with the write still shows that version) and the status as canonical JSON.
    statuses: dict[Key, tuple[dict[str, Any], str, str]] = field(default_factory=dict)
    # The inputs of each SLMDeployment's last successful reconcile (see inputs()); None: reconcile at the next resync.
    inputs: dict[Key, Hashable | None] = field(default_factory=dict)
    # monotonic time of the last status write (of the first reconcile, for an SLMDeployment without a status yet)
    written_at: dict[Key, float] = field(default_factory=dict)
    # (namespace, name, kind, object name) -> (hash of the manifest, resourceVersion answered, monotonic time) of
    # the last apply of each owned object
    applied: dict[tuple[str, str, str, str], tuple[int, str, float]] = field(default_factory=dict)
    running: set[Key] = field(default_factory=set)
    # Reconciles at once (one per writer connection). Each holds its decoded live objects, rendered manifests and
    # the JSON of its applies until they are answered: unbounded, 1,000 SLMDeployments created within seconds (one
    # reconcile per event) held all of theirs together, the high-water mark of memory (docs/operator-scale.md).
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(PROCESS.workers))
    again: set[Key] = field(default_factory=set)
    started: bool = False  # an event handler ran: every index holds its first listing
    reconciles: int = 0
    # The watches of the owned kinds and pods (watch.py); set once each holds its first listing.
    listed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # The context of kopf's event handlers (kopf.event posts through it), copied by the first one to run.
    context: contextvars.Context | None = None  # watches, and reconciles their events started


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings,
    memo: kopf.Memo,
    logger: logging.Logger | logging.LoggerAdapter[Any],
    **_: Any,
) -> None:
    # Progress in our own annotations, should a change-detecting handler ever be added (the CRD's structural status
    # schema would prune kopf's default status.kopf field); no diff-base at all (see _NoDiffBase).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = _NoDiffBase(prefix=GROUP, key="last-handled-configuration")
    # A restart lists every SLMDeployment at once: in chunks, the decoded lists do not all sit in memory together.
    settings.watching.chunk_size = LIST_CHUNK
    # kopf's worker of an object keeps the object's last event (its whole body) until it exits, idle_timeout after
    # the event; the handler hands each event over at once (on_spec), so the worker need not wait long.
    settings.queueing.idle_timeout = 0.5
    # We post our own Events on transitions; kopf's per-handler chatter would be writes in every reconcile.
    settings.posting.level = logging.WARNING
    # Reconnect watches regularly so a silently dropped connection cannot freeze the caches for long.
    settings.watching.server_timeout = WATCH_SECONDS
    settings.watching.client_timeout = WATCH_SECONDS + 30
    # Bounded API latency: a stuck request is retried instead of hanging a worker.
    settings.networking.request_timeout = 60
    # Blocking calls (Lease, discovery) run in threads; the reconciles themselves are async.
    settings.execution.max_workers = 4
    # Everything imported so far lives as long as the process (about 40 MiB of Python objects): out of the garbage
    # collector's sight, a full collection no longer walks it. A restart's listings and a creation burst make
    # objects fast enough to trigger many; an operator restarted over 1,000 SLMDeployments spent 0.39-0.43 s in
    # collections, 0.16-0.22 s after a freeze (docs/operator-scale.md).
    gc.freeze()
    api = load_kube_config(connections=4)
    operator_settings = load_settings()
    elector = LeaseElector(api, namespace=PROCESS.namespace, name=PROCESS.lease_name)
    memo.elector = elector
    # /healthz answers for every replica (a waiting standby is healthy); /readyz only for the leader.
    if PROCESS.metrics_port:
        memo.metrics_server = metrics.serve_metrics(PROCESS.metrics_port, ready=elector.is_leader)
    # Only one operator replica acts: a Lease (coordination.k8s.io) elects it; the others wait here.
    await asyncio.to_thread(elector.acquire_blocking)
    kube = KubeClient(api, operator_settings.field_manager)
    caches: dict[str, Cache[Kept]] = {name: Cache() for name in WATCHED}
    controller = Controller(
        settings=operator_settings,
        kube=kube,
        writer=AsyncWriter(api.configuration, operator_settings.field_manager, CONNECTIONS_PER_SLOT * PROCESS.workers),
        indexes={"slm_bodies": Cache[KeptSLM](), **caches},
        service_monitor_crd=False,
    )
    memo.controller = controller

    async def discover() -> None:
        # What the cluster serves decides what is rendered: known before the first reconcile (controller.listed),
        # found while the watches list and kopf starts (discovery reads every API group: a restart's first second).
        while True:
            try:
                controller.service_monitor_crd = await asyncio.to_thread(
                    kube.has_kind, "monitoring.coreos.com/v1", "ServiceMonitor"
                )
                controller.keda = await asyncio.to_thread(_keda, controller)
                break
            except Exception:  # the reconciles wait for it: asked again, not given up
                log.exception("discovery failed; asking again in 5s")
                controller.keda_checked = 0.0
                await asyncio.sleep(5)
        logger.info(
            "slm-operator ready: leader %s, ServiceMonitor CRD %s, KEDA ScaledObject %s",
            elector.identity,
            controller.service_monitor_crd,
            controller.keda,
        )

    _start_watches(controller, ApiConnection(api.configuration), caches, discover())


def _start_watches(
    controller: Controller,
    connection: ApiConnection,
    caches: Mapping[str, Cache[Kept]],
    discovery: Coroutine[Any, Any, None],
) -> None:
    """One watch per owned kind and pods (per watched namespace), all on one session of their own (a watch holds its
    connection, which must not take one from the writer's pool); ``controller.listed`` once every one has listed
    and ``discovery`` is done."""
    session = connection.session(0, aiohttp.ClientTimeout(total=None, sock_connect=30))
    watchers = [
        Watcher(
            connection,
            WATCHED[name],
            caches[name],
            namespace=namespace,
            on_change=functools.partial(_owned_changed, controller, WATCHED[name].kind),
            page=WATCH_PAGE,
            server_timeout=WATCH_SECONDS,
            recheck_seconds=KEDA_RECHECK_SECONDS,
        )
        for name in WATCHED
        for namespace in WATCH_NAMESPACES
    ]

    async def listed() -> None:
        await asyncio.gather(discovery, *(watcher.ready.wait() for watcher in watchers))
        controller.listed.set()

    async def close() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await session.close()

    for coroutine in [*(watcher.run(session) for watcher in watchers), listed(), close()]:
        _keep_task(controller, asyncio.get_running_loop().create_task(coroutine))


def _keep_task(controller: Controller, task: asyncio.Task[Any]) -> None:
    controller.tasks.add(task)
    task.add_done_callback(controller.tasks.discard)


def _owned_changed(controller: Controller, kind: str, event: str, key: Key, kept: Kept | None) -> None:
    """A watch event of an owned object or pod. An apply of this operator is no longer awaited once the watch shows
    the version it answered; an owned Deployment that changed (pods became ready, a rollout moved on, a hand edit)
    or was deleted asks for a reconcile of its SLMDeployment now, so that status follows at once instead of at the
    next resync. Listings and our own creations are left to the SLMDeployment's events and the resync."""
    if kept is not None and controller.applied and kind != "Pod":
        watched(controller, key, kind, kept)
    known = key in controller.inputs or key in controller.statuses
    if kind == "Deployment" and event in ("MODIFIED", "DELETED") and controller.context is not None and known:
        # In the context of kopf's handlers (kopf.event needs it), as the resync loop is.
        task = asyncio.get_running_loop().create_task(request_reconcile(controller, key), context=controller.context)
        _keep_task(controller, task)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    task = getattr(memo, "resync_task", None)
    if task is not None:
        task.cancel()
    controller = getattr(memo, "controller", None)
    if controller is not None:
        for running in list(controller.tasks):
            running.cancel()
        await asyncio.gather(*controller.tasks, return_exceptions=True)
        await controller.writer.close()
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()
    elector = getattr(memo, "elector", None)
    if elector is not None:
        await asyncio.to_thread(elector.release)


def _keda(controller: Controller) -> bool:
    """Whether the cluster serves KEDA's ScaledObject. Once seen it is remembered; while missing, discovery is asked
    again at most every KEDA_RECHECK_SECONDS, so installing KEDA later needs no operator restart."""
    if controller.keda:
        return True
    now = time.monotonic()
    if controller.keda_checked and now - controller.keda_checked < KEDA_RECHECK_SECONDS:
        return False
    controller.keda_checked = now
    return controller.kube.has_kind(KEDA_API_VERSION, "ScaledObject")


def _live(key: Key, indexes: Mapping[str, Any]) -> LiveObjects:
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for _, kind in OWNED_KINDS:
        index = indexes.get(_index_id(kind))
        if index is not None:
            by_kind[kind] = [kept.body() for kept in index.get(key, [])]
    return LiveObjects(by_kind=by_kind, pods=[kept.body() for kept in indexes["owned_pods"].get(key, [])])


def _newest(records: Any) -> KeptSLM | None:
    """The one live object of a name: the newest stored record (the event handler keeps one per name)."""
    ordered = sorted(records, key=lambda kept: kept.created)
    return ordered[-1] if ordered else None


def _as_body(body: Mapping[str, Any]) -> kopf.Body:
    """A stored body as kopf's event posting takes it (it reads apiVersion, kind and metadata)."""
    raw: Any = dict(body)
    return kopf.Body(raw)


def inputs(controller: Controller, key: Key, slm: KeptSLM) -> Hashable | None:
    """What a reconcile of ``key`` reads, as a comparable value; None when it must run whatever the last one saw
    (a pod is unschedulable: hardware fallback depends on the time)."""
    owned: list[tuple[str, str, str]] = []
    for _, kind in OWNED_KINDS:
        index = controller.indexes.get(_index_id(kind))
        kept: Kept
        for kept in index.get(key, []) if index is not None else ():
            owned.append((kind, kept.name, kept.version))
    pods = []
    for kept in controller.indexes["owned_pods"].get(key, []):
        if kept.unschedulable:
            return None
        pods.append(kept.version)
    return (
        slm.meta_inputs,
        tuple(sorted(owned)),
        tuple(sorted(pods)),
        controller.keda,
        controller.service_monitor_crd,
    )


def _applied_key(key: Key, manifest: Mapping[str, Any]) -> tuple[str, str, str, str]:
    return (*key, manifest["kind"], manifest["metadata"]["name"])


def _remember_applies(
    controller: Controller, key: Key, applied: list[dict[str, Any]], versions: list[str] | None
) -> None:
    now = time.monotonic()
    for manifest, version in zip(applied, versions or [], strict=False):
        if version:
            controller.applied[_applied_key(key, manifest)] = (hash(canonical(manifest)), version, now)


def _awaiting_watch(controller: Controller, key: Key, manifest: Mapping[str, Any]) -> bool:
    """Whether this very manifest was applied by this operator less than a resync period ago and the index does
    not show the object as that apply answered it yet (a watch event still on its way)."""
    record = controller.applied.get(_applied_key(key, manifest))
    if record is None:
        return False
    digest, version, at = record
    if time.monotonic() - at >= PROCESS.resync_seconds or digest != hash(canonical(manifest)):
        return False
    index = controller.indexes.get(_index_id(manifest["kind"]))
    name = manifest["metadata"]["name"]
    return not any(kept.name == name and kept.version == version for kept in (index or {}).get(key, []))


def watched(controller: Controller, key: Key, kind: str, kept: Kept) -> None:
    """The watch shows an owned object: once it shows the version this operator's last apply answered, that apply
    is no longer awaited (any difference from then on is a change to repair)."""
    applied = (*key, kind, kept.name)
    record = controller.applied.get(applied)
    if record is not None and record[1] == kept.version:
        del controller.applied[applied]


def _forget(controller: Controller, key: Key) -> None:
    for applied in [k for k in controller.applied if k[:2] == key]:
        del controller.applied[applied]
    controller.statuses.pop(key, None)
    controller.inputs.pop(key, None)
    controller.written_at.pop(key, None)


def _coalesced(controller: Controller, key: Key, previous: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether to hold a status change back for now: the first status of a new SLMDeployment while it is still
    starting, for up to a resync period after its first reconcile (one that is Ready by then has its status written
    once, as Ready); or a change between two starting phases (Pending, Downloading, Loading, same generation) less
    than a resync period after the last write. The resync writes the latest then."""
    now = time.monotonic()
    if not previous.get("phase"):
        first = controller.written_at.setdefault(key, now)
        return status.get("phase") in _STARTING and now - first < PROCESS.resync_seconds
    return bool(
        previous.get("phase") in _STARTING
        and status.get("phase") in _STARTING
        and previous.get("observedGeneration") == status.get("observedGeneration")
        and now - controller.written_at.get(key, 0.0) < PROCESS.resync_seconds
    )


def _events(previous: Mapping[str, Any], status: Mapping[str, Any]) -> list[Any]:
    """The Events of a status change, less the creation's (no phase -> a starting phase): that one says nothing
    the creation did not."""
    events = transition_events(previous, status)
    if not previous.get("phase") and status.get("phase") in _STARTING:
        events = [e for e in events if e.reason != status.get("phase")]
    return events


async def _write_status(
    controller: Controller, key: Key, body: Mapping[str, Any], previous: dict[str, Any], status: dict[str, Any]
) -> None:
    for event in _events(previous, status):
        kopf.event(_as_body(body), type=event.type, reason=event.reason, message=event.message)
    await controller.writer.patch_slm_status(key[0], key[1], status)
    controller.written_at[key] = time.monotonic()


def _previous_status(controller: Controller, key: Key, body: Mapping[str, Any]) -> dict[str, Any]:
    """The status to start from: the body's, unless the watch has not yet caught up with our own last write (then
    the body still has the version we started that write from) and what we wrote is the truth."""
    written = controller.statuses.get(key)
    if written is not None and written[1] == body.get("metadata", {}).get("resourceVersion"):
        return dict(written[0])
    return dict(body.get("status") or {})


async def _reconcile_once(controller: Controller, key: Key) -> None:
    kept = _newest(controller.indexes["slm_bodies"].get(key, []))
    if kept is None or kept.deleting:
        # Gone or being deleted: garbage collection removes its owned objects.
        _forget(controller, key)
        return
    namespace, name = key
    seen = inputs(controller, key, kept)
    body = kept.body()
    previous = _previous_status(controller, key, body)
    version = kept.version
    controller.keda = _keda(controller)
    writes = Writes()
    started = time.perf_counter()
    try:
        result = reconcile(
            {**body, "status": previous},
            _live(key, controller.indexes),
            writes,
            controller.settings,
            service_monitor_crd=controller.service_monitor_crd,
            keda=controller.keda,
        )
    except ManifestError as exc:
        metrics.RECONCILES.labels(result="invalid").inc()
        status = invalid_status(exc, int(body.get("metadata", {}).get("generation") or 0), previous)
        if status != previous:
            kopf.warn(_as_body(body), reason="InvalidSpec", message=str(exc))
            await controller.writer.patch_slm_status(namespace, name, status)
            controller.written_at[key] = time.monotonic()
        controller.statuses[key] = (status, version, canonical(status))
        controller.inputs[key] = seen
        return
    finally:
        rendered = time.perf_counter()
        metrics.RECONCILE_SECONDS.observe(rendered - started)
        metrics.STAGE_SECONDS.labels(stage="render").observe(rendered - started)
    # An apply answered a moment ago whose object the watch has not shown yet looks missing or stale in the index:
    # not sent again while the watch catches up (at most a resync period; the next resync compares again).
    awaiting = [m for m in writes.applies if _awaiting_watch(controller, key, m)]
    if awaiting:
        writes.applies = [m for m in writes.applies if m not in awaiting]
    versions = await controller.writer.write(writes)
    if writes.applies:
        metrics.STAGE_SECONDS.labels(stage="apply").observe(time.perf_counter() - rendered)
    _remember_applies(controller, key, writes.applies, versions)
    metrics.RECONCILES.labels(result="changed" if writes.applies or writes.deletes else "unchanged").inc()
    if result.fell_back_to:
        metrics.FALLBACKS.labels(to=result.fell_back_to).inc()
        kopf.warn(_as_body(body), reason="HardwareFallback", message=result.status["hardware"]["reason"])
    if result.status != previous and _coalesced(controller, key, previous, result.status):
        controller.inputs[key] = None  # the next resync reconciles again and writes what is true then
        return
    if result.status != previous:
        await _write_status(controller, key, body, previous, result.status)
    controller.statuses[key] = (result.status, version, canonical(result.status))
    # Applied objects change their resourceVersions: the next resync looks again (and finds nothing to do).
    controller.inputs[key] = None if awaiting else seen


async def request_reconcile(controller: Controller, key: Key, since: float | None = None) -> None:
    """Reconcile ``key`` now; if a reconcile of it is running, once more after it (never two at once). ``since``:
    the perf_counter of the event that asked for it (the wait for a slot is measured from there)."""
    if key in controller.running:
        controller.again.add(key)
        return
    controller.running.add(key)
    try:
        while True:
            controller.again.discard(key)
            controller.reconciles += 1
            try:
                async with controller.slots:
                    if since is not None:
                        metrics.STAGE_SECONDS.labels(stage="slot").observe(time.perf_counter() - since)
                        since = None
                    await _reconcile_once(controller, key)
            except Exception:
                metrics.RECONCILES.labels(result="error").inc()
                controller.inputs.pop(key, None)  # the resync loop tries again
                log.exception("reconciling SLMDeployment %s/%s failed; retrying at the next resync", *key)
            if key not in controller.again:
                return
    finally:
        controller.running.discard(key)


async def resync_once(controller: Controller) -> int:
    """Reconcile every SLMDeployment whose inputs changed since its last reconcile; how many that were."""
    index = controller.indexes["slm_bodies"]
    changed: list[Key] = []
    phases: list[str] = []
    for key in list(index.keys()):
        kept = _newest(index.get(key, []))
        if kept is None:
            continue
        phases.append(kept.phase)
        seen = inputs(controller, key, kept)
        written = controller.statuses.get(key)
        drifted_status = written is not None and kept.status != written[2]
        if seen is None or seen != controller.inputs.get(key) or drifted_status:
            changed.append(key)
    metrics.set_phase_counts(phases)
    for gone in set(controller.inputs) - set(index.keys()):
        _forget(controller, gone)
    await asyncio.gather(*(request_reconcile(controller, key) for key in changed))
    return len(changed)


def _release_memory() -> None:
    """Hand the heap's free pages back to the system. A burst of watch events (thousands of decoded bodies at once,
    while SLMDeployments are created or after a restart's listings) leaves glibc's heap with free memory that it
    keeps as resident otherwise; nothing of it is in use once the burst is over. No-op without glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


async def _resync_forever(controller: Controller) -> None:
    released_at = 0  # controller.reconciles when the memory was last released
    while True:
        await asyncio.sleep(PROCESS.resync_seconds)
        if not controller.started:
            continue  # no event handler ran yet: the indexes may not hold their first listing
        try:
            controller.keda = await asyncio.to_thread(_keda, controller)
            changed = await resync_once(controller)
        except Exception:
            log.exception("resync failed; trying again in %ss", PROCESS.resync_seconds)
            continue
        if not changed and not controller.running and controller.reconciles != released_at:
            released_at = controller.reconciles  # the first quiet period after reconciles
            _release_memory()


@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_spec(type: str, namespace: str | None, name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A new, changed or (after a restart) listed SLMDeployment: keep its record and reconcile it once the owned
    objects and pods are listed (``_follow``), so a restarted operator sees the owned objects that exist.

    The name is the one the create/update/resume handler had: kopf logs "Handler 'on_spec' succeeded." for each
    event, which tests/integration/test_chart.py and test_real_node_slm.py look for in the operator's log."""
    controller: Controller = memo.controller
    key = (namespace or "", name)
    records: Cache[KeptSLM] = controller.indexes["slm_bodies"]
    if type == "DELETED":
        records.remove(key)
    else:
        records.put(key, key, keep_slm(body))
    # The reconcile reads the record, not this event's body: it runs as a task of its own and kopf's worker
    # lets the body go now. Waiting here (for the listings, for a slot) held 1,000 bodies and kopf's per-event state
    # at once when 1,000 SLMDeployments were created within seconds or listed after a restart.
    task = asyncio.get_running_loop().create_task(_follow(controller, memo, type, key, time.perf_counter()))
    _keep_task(controller, task)


async def _follow(controller: Controller, memo: kopf.Memo, type: str, key: Key, since: float) -> None:
    await controller.listed.wait()  # the owned objects as they are, not as an empty cache would have them
    listed = time.perf_counter()
    metrics.STAGE_SECONDS.labels(stage="listing").observe(listed - since)
    _start(controller, memo)
    if type == "DELETED":
        _forget(controller, key)
        return
    kept = _newest(controller.indexes["slm_bodies"].get(key, []))
    if kept is not None and _unchanged(controller, key, kept):
        return  # our own status write coming back, or an event that changed nothing a reconcile reads
    await request_reconcile(controller, key, listed)


def _unchanged(controller: Controller, key: Key, kept: KeptSLM) -> bool:
    written = controller.statuses.get(key)
    if written is None or controller.inputs.get(key) != inputs(controller, key, kept):
        return False
    return kept.status == written[2] or written[1] == kept.version


def _start(controller: Controller, memo: kopf.Memo) -> None:
    if not controller.started:
        controller.started = True
        controller.context = contextvars.copy_context()
        memo.resync_task = asyncio.get_running_loop().create_task(_resync_forever(controller))
