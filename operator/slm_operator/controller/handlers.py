"""kopf handlers: the only place where the operator meets kopf. Run with `slm operator run`.

Changes to an SLMDeployment's spec are reconciled at once (create/update/resume), and so is a change of an owned
Deployment (its pods becoming ready, a rollout moving on, a hand edit or deletion); a timer reconciles every
``SLM_OPERATOR_RESYNC_SECONDS`` (ProcessSettings) as well, which restores other owned objects edited or deleted by
hand, follows pods into status and drives hardware fallback. Owned objects and pods are read from kopf indexes
(watch caches).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from typing import Any

import kopf

from slm_operator.api.errors import ManifestError
from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.controller import metrics
from slm_operator.controller.kube import KubeClient, load_kube_config
from slm_operator.controller.leader import LeaseElector
from slm_operator.controller.reconcile import LiveObjects, invalid_status, reconcile
from slm_operator.controller.status import transition_events
from slm_operator.render import OWNED_KINDS
from slm_operator.render.meta import MANAGED_BY
from slm_operator.render.scaling import KEDA_API_VERSION
from slm_operator.settings import ProcessSettings, load_settings

__all__: list[str] = []

log = logging.getLogger(__name__)

INSTANCE_LABEL = "app.kubernetes.io/instance"
OWNED = {"app.kubernetes.io/managed-by": MANAGED_BY}
PROCESS = ProcessSettings.from_env()
# How often a cluster without KEDA is asked again whether it serves ScaledObjects now (KEDA installed later).
KEDA_RECHECK_SECONDS = 60.0
_PLURALS = {
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Service": "services",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "ServiceMonitor": "servicemonitors",
}


def _index_id(kind: str) -> str:
    return f"owned_{kind.lower()}"


def _key(namespace: str | None, labels: Mapping[str, str]) -> tuple[str, str]:
    return (namespace or "", labels.get(INSTANCE_LABEL, ""))


def _register_index(api_version: str, kind: str) -> None:
    group, _, version = api_version.rpartition("/")

    def index(namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
        return {_key(namespace, labels): dict(body)}

    kopf.index(group, version, _PLURALS[kind], id=_index_id(kind), labels=OWNED)(index)


for _api_version, _kind in OWNED_KINDS:
    # kopf watches a kind only while the cluster serves it (ServiceMonitor: where the Prometheus Operator is).
    _register_index(_api_version, _kind)


@kopf.index(GROUP, VERSION, PLURAL)
def slm_phases(namespace: str | None, name: str, status: Mapping[str, Any], **_: Any) -> Any:
    """The phase of every SLMDeployment, for the slm_operator_managed_slmdeployments gauge."""
    return {(namespace or "", name): status.get("phase") or "Pending"}


@kopf.index(GROUP, VERSION, PLURAL)
def slm_bodies(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> Any:
    """Every SLMDeployment as last seen, for reconciles that a change of an owned Deployment starts."""
    return {(namespace or "", name): dict(body)}


@kopf.index("", "v1", "pods", labels={**OWNED, "app.kubernetes.io/component": "model-server"})
def owned_pods(namespace: str | None, labels: Mapping[str, str], body: kopf.Body, **_: Any) -> Any:
    return {_key(namespace, labels): dict(body)}


@kopf.on.startup()
def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    # Progress and diff-base in our own annotations: the CRD's structural status schema would prune kopf's
    # default status.kopf field, and our own prefix keeps kopf's traces recognisable.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # We post our own Events on transitions; kopf's per-handler chatter would be writes in every reconcile.
    settings.posting.level = logging.WARNING
    # Reconnect watches regularly so a silently dropped connection cannot freeze the caches for long.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # Bounded API latency: a stuck request is retried instead of hanging a worker.
    settings.networking.request_timeout = 60
    # Retries of failed handlers back off instead of hammering a struggling apiserver.
    settings.execution.max_workers = PROCESS.workers
    api = load_kube_config(connections=PROCESS.workers)
    operator_settings = load_settings()
    elector = LeaseElector(api, namespace=PROCESS.namespace, name=PROCESS.lease_name)
    memo.elector = elector
    # /healthz answers for every replica (a waiting standby is healthy); /readyz only for the leader.
    if PROCESS.metrics_port:
        memo.metrics_server = metrics.serve_metrics(PROCESS.metrics_port, ready=elector.is_leader)
    # Only one operator replica acts: a Lease (coordination.k8s.io) elects it; the others wait here.
    elector.acquire_blocking()
    memo.settings = operator_settings
    memo.statuses = {}  # (namespace, name) -> the status this operator last decided on (see _reconcile)
    memo.kube = KubeClient(api, operator_settings.field_manager)
    memo.service_monitor_crd = memo.kube.has_kind("monitoring.coreos.com/v1", "ServiceMonitor")
    memo.keda_checked = 0.0
    memo.keda = _keda(memo)
    logger.info(
        "slm-operator ready: leader %s, ServiceMonitor CRD %s, KEDA ScaledObject %s",
        elector.identity,
        memo.service_monitor_crd,
        memo.keda,
    )


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    server = getattr(memo, "metrics_server", None)
    if server is not None:
        server.shutdown()
    elector = getattr(memo, "elector", None)
    if elector is not None:
        elector.release()


def _keda(memo: kopf.Memo) -> bool:
    """Whether the cluster serves KEDA's ScaledObject. Once seen it is remembered; while missing, discovery is asked
    again at most every KEDA_RECHECK_SECONDS, so installing KEDA later needs no operator restart."""
    if getattr(memo, "keda", False):
        return True
    now = time.monotonic()
    if memo.keda_checked and now - memo.keda_checked < KEDA_RECHECK_SECONDS:
        return False
    memo.keda_checked = now
    found: bool = memo.kube.has_kind(KEDA_API_VERSION, "ScaledObject")
    return found


def _live(namespace: str, name: str, indexes: Mapping[str, Any]) -> LiveObjects:
    key = (namespace, name)
    by_kind: dict[str, list[Mapping[str, Any]]] = {}
    for _, kind in OWNED_KINDS:
        index = indexes.get(_index_id(kind))
        if index is not None:
            by_kind[kind] = list(index.get(key, []))
    return LiveObjects(by_kind=by_kind, pods=list(indexes["owned_pods"].get(key, [])))


def _uid(body: Mapping[str, Any]) -> str:
    return str(body.get("metadata", {}).get("uid", ""))


def _newest(bodies: Any) -> list[Mapping[str, Any]]:
    """The one live object of a name: the newest stored body (an older one is a deleted object that the index
    has not dropped yet)."""
    ordered = sorted(bodies, key=lambda b: str(b.get("metadata", {}).get("creationTimestamp", "")))
    return ordered[-1:]


def _is_current(body: Mapping[str, Any], slm_bodies: Any) -> bool:
    """Whether ``body`` is the SLMDeployment that now holds its name (not a deleted one of the same name)."""
    key = (body.get("metadata", {}).get("namespace", ""), body.get("metadata", {}).get("name", ""))
    return any(_uid(stored) == _uid(body) for stored in _newest(slm_bodies.get(key, [])))


def _reconcile(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo, **kwargs: Any) -> None:
    namespace = body.get("metadata", {}).get("namespace", "")
    name = body.get("metadata", {}).get("name", "")
    decided: dict[tuple[str, str], Any] = memo.statuses
    if body.get("metadata", {}).get("deletionTimestamp") or not _is_current(body, kwargs["slm_bodies"]):
        # Being deleted, or already gone from the watch (without a finalizer a timer may fire once more), or a
        # deleted object whose name a new one took (applying with its uid as owner would have garbage collection
        # delete what we apply, again and again): garbage collection removes its owned objects.
        decided.pop((namespace, name), None)
        return
    previous = dict(body.get("status") or {})
    memo.keda = _keda(memo)
    started = time.perf_counter()
    try:
        result = reconcile(
            body,
            _live(namespace, name, kwargs),
            memo.kube,
            memo.settings,
            service_monitor_crd=memo.service_monitor_crd,
            keda=memo.keda,
        )
    except ManifestError as exc:
        metrics.RECONCILES.labels(result="invalid").inc()
        status = invalid_status(exc, int(body.get("metadata", {}).get("generation") or 0), previous)
        decided[(namespace, name)] = status
        if status != previous:
            kopf.warn(body, reason="InvalidSpec", message=str(exc))
            patch.status.update(status)
        return
    except Exception:
        metrics.RECONCILES.labels(result="error").inc()
        raise
    finally:
        metrics.RECONCILE_SECONDS.observe(time.perf_counter() - started)
    metrics.RECONCILES.labels(result="changed" if result.applied or result.deleted else "unchanged").inc()
    metrics.set_phase_counts(phase for store in kwargs["slm_phases"].values() for phase in store)
    if result.fell_back_to:
        metrics.FALLBACKS.labels(to=result.fell_back_to).inc()
        kopf.warn(body, reason="HardwareFallback", message=result.status["hardware"]["reason"])
    for event in transition_events(previous, result.status):
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    decided[(namespace, name)] = result.status
    if result.status != previous:
        patch.status.update(result.status)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_spec(**kwargs: Any) -> None:
    """A new or changed spec (or an operator restart): reconcile now."""
    _reconcile(**kwargs)


@kopf.timer(GROUP, VERSION, PLURAL, interval=PROCESS.resync_seconds, initial_delay=PROCESS.resync_seconds, sharp=False)
def resync(**kwargs: Any) -> None:
    """Periodic reconcile: restores drifted or deleted objects and follows pods into status.

    The first run waits one interval: a new object was just reconciled by ``on_spec`` (without the delay both ran
    at once, applying every object twice)."""
    _reconcile(**kwargs)


@kopf.on.event("apps", "v1", "deployments", labels=OWNED)
def owned_deployment_changed(namespace: str | None, labels: Mapping[str, str], memo: kopf.Memo, **kwargs: Any) -> None:
    """An owned Deployment changed (pods became ready, a rollout moved on) or was deleted: reconcile its
    SLMDeployment now, so that status follows at once instead of at the next resync. The initial listing and our
    own creations are left to the handlers above."""
    if kwargs["type"] not in ("MODIFIED", "DELETED"):
        return
    key = _key(namespace, labels)
    for stored in _newest(kwargs["slm_bodies"].get(key, [])):
        # The index may not hold the status patched a moment ago yet: start from what was decided last, so that
        # an unchanged status is not written (and its phase Event not posted) twice.
        raw: Any = {**stored, "status": memo.statuses.get(key, stored.get("status"))}
        body = kopf.Body(raw)
        patch = kopf.Patch()
        indexes = {name: value for name, value in kwargs.items() if name not in ("body", "patch")}
        _reconcile(body=body, patch=patch, memo=memo, **indexes)
        if patch.status:
            memo.kube.patch_slm_status(namespace or "", body["metadata"]["name"], dict(patch.status))


def _timers_without_finalizer(registry: kopf.OperatorRegistry) -> None:
    """kopf puts a finalizer on every object that has a timer, so that it can stop the timer before the
    object goes. Ours needs no such care (a late run only meets a 404), and the finalizer would leave
    SLMDeployments, and their namespaces, undeletable whenever the operator is not running (after
    `helm uninstall`, say). kopf (pinned) has no switch for it, so the registered timer is rebuilt without
    the flag; tests/integration/test_operator.py checks that no finalizer appears."""
    timers = registry._spawning._handlers  # no public API for this flag
    timers[:] = [dataclasses.replace(handler, requires_finalizer=False) for handler in timers]


_timers_without_finalizer(kopf.get_default_registry())
