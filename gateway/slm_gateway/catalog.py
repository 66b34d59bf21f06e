"""The catalog: which models exist and which pods serve them, as a plain data structure updated by watch events.

Two kinds of objects feed it: SLMDeployments (a model, its served name, phase and whether it scales to zero) and
EndpointSlices (the pods of a model's Service, which has the SLMDeployment's name, with the port named ``http``).
Each event is a plain dict as the apiserver sends it; :meth:`Catalog.apply` returns the model ids whose routing
changed, so the caller can wake the requests held for them. Nothing here does I/O, so it is tested without a
cluster and the Kubernetes adapter (``slm_gateway.kube``) stays a thin translator of watch events.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from slm_operator.api.base import ApiModel
from slm_operator.api.enums import Phase
from slm_operator.api.gateway import model_id, split_model_id
from slm_operator.api.spec import AutoscalingSpec, ModelSpec

__all__ = [
    "ENDPOINT_PORT_NAME",
    "LISTED_PHASES",
    "SERVICE_NAME_LABEL",
    "WAKEABLE_PHASES",
    "Catalog",
    "Delete",
    "Endpoint",
    "Event",
    "Kind",
    "Model",
    "Resync",
    "Upsert",
    "endpoints_of_slice",
    "model_of",
]

log = logging.getLogger(__name__)

# The label the EndpointSlice controller puts on every slice of a Service.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# The SLMDeployment's Service names its port "http" (slm_operator.render.network).
ENDPOINT_PORT_NAME = "http"
# Phases of a model at zero or coming back from it: a request wakes it (or is already waking it).
WAKEABLE_PHASES = frozenset({str(Phase.SCALED_TO_ZERO), str(Phase.WAKING)})
# Phases listed by /v1/models and /api/tags even without a ready pod.
LISTED_PHASES = frozenset({str(Phase.READY)}) | WAKEABLE_PHASES


def _known_fields(model: type[ApiModel], raw: Mapping[str, Any]) -> dict[str, Any]:
    """``raw`` less the fields ``model`` does not know (a newer operator's), so that it validates."""
    known = {info.alias or name for name, info in model.model_fields.items()} | set(model.model_fields)
    return {k: v for k, v in raw.items() if k in known}


class Kind(StrEnum):
    """The watched kinds."""

    SLM = "SLMDeployment"
    SLICE = "EndpointSlice"


@dataclass(frozen=True)
class Endpoint:
    """One pod address serving a model."""

    address: str
    port: int
    ready: bool = True

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Model:
    """What the gateway needs to know of one SLMDeployment."""

    namespace: str
    name: str
    served_name: str
    """The model name the runtime answers to; requests are rewritten to it."""
    phase: str | None = None
    scales_to_zero: bool = False
    """spec.autoscaling lets it go to zero replicas (so a request may wake it)."""
    created: str = ""
    digest: str = ""
    size_bytes: int = 0
    format: str = ""
    engine: str = ""

    @property
    def id(self) -> str:
        return model_id(self.namespace, self.name)

    @property
    def failed(self) -> bool:
        return self.phase == str(Phase.FAILED)

    @property
    def listed(self) -> bool:
        """Whether the model lists without a ready pod: Ready, or at zero or waking (a request wakes it)."""
        return self.phase in LISTED_PHASES

    @property
    def at_zero(self) -> bool:
        """Whether a request should wake it: it scales to zero, or the operator reports it at zero or waking."""
        return self.scales_to_zero or self.phase in WAKEABLE_PHASES


@dataclass(frozen=True)
class Upsert:
    """An object was added or changed."""

    kind: Kind
    obj: Mapping[str, Any]


@dataclass(frozen=True)
class Delete:
    """An object is gone."""

    kind: Kind
    obj: Mapping[str, Any]


@dataclass(frozen=True)
class Resync:
    """A full list of ``kind`` in ``namespace`` (None: every namespace): what it lacks is gone."""

    kind: Kind
    namespace: str | None
    objs: tuple[Mapping[str, Any], ...]


Event = Upsert | Delete | Resync


def _dig(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    return str(_dig(obj, "metadata", "namespace") or ""), str(_dig(obj, "metadata", "name") or "")


def model_of(obj: Mapping[str, Any]) -> Model | None:
    """The Model of an SLMDeployment object; None (logged) when its spec.model cannot be read."""
    namespace, name = _key(obj)
    raw_model = _dig(obj, "spec", "model")
    if not namespace or not name or not isinstance(raw_model, Mapping):
        return None
    try:
        served = ModelSpec.model_validate(_known_fields(ModelSpec, raw_model)).served_name()
    except (ValidationError, ValueError) as exc:
        log.warning("SLMDeployment %s/%s: spec.model cannot be read, not routing to it: %s", namespace, name, exc)
        return None
    autoscaling = _dig(obj, "spec", "autoscaling")
    try:
        to_zero = isinstance(autoscaling, Mapping) and (
            AutoscalingSpec.model_validate(_known_fields(AutoscalingSpec, autoscaling)).scales_to_zero
        )
    except (ValidationError, ValueError):
        to_zero = False  # the apiserver validated it; a spec this gateway cannot read does not wake
    status = _dig(obj, "status") or {}
    model_status = status.get("model") or {}
    return Model(
        namespace=namespace,
        name=name,
        served_name=served,
        phase=status.get("phase"),
        scales_to_zero=to_zero,
        created=str(_dig(obj, "metadata", "creationTimestamp") or ""),
        digest=str(model_status.get("digest") or ""),
        size_bytes=int(model_status.get("sizeBytes") or 0),
        format=str(raw_model.get("format") or ""),
        engine=str(status.get("engine") or _dig(obj, "spec", "engine") or ""),
    )


def endpoints_of_slice(obj: Mapping[str, Any]) -> tuple[Endpoint, ...]:
    """The endpoints of an EndpointSlice on its port named ``http`` (none without that port)."""
    ports = [p for p in obj.get("ports") or () if p.get("name") == ENDPOINT_PORT_NAME and p.get("port")]
    if not ports:
        return ()
    port = int(ports[0]["port"])
    found: list[Endpoint] = []
    for endpoint in obj.get("endpoints") or ():
        conditions = endpoint.get("conditions") or {}
        ready = conditions.get("ready") is not False  # unset means ready (EndpointConditions)
        found.extend(Endpoint(str(address), port, ready) for address in endpoint.get("addresses") or ())
    return tuple(found)


@dataclass
class _Slice:
    service: tuple[str, str]
    endpoints: tuple[Endpoint, ...]


@dataclass
class Catalog:
    """Models by (namespace, name) and endpoint slices by (namespace, slice name); see the module docstring."""

    models: dict[tuple[str, str], Model] = field(default_factory=dict)
    _slices: dict[tuple[str, str], _Slice] = field(default_factory=dict)
    _by_service: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)
    synced: set[Kind] = field(default_factory=set)
    """Kinds whose full list has arrived at least once: before both have, the gateway is not ready."""

    # --- updates -----------------------------------------------------------------------------------------

    def apply(self, event: Event) -> set[str]:
        """Apply one watch event; the ids of the models whose routing it changed."""
        if isinstance(event, Resync):
            return self._resync(event)
        key = _key(event.obj)
        if event.kind is Kind.SLM:
            before = self.models.get(key)
            if isinstance(event, Delete):
                self.models.pop(key, None)
            else:
                model = model_of(event.obj)
                if model is None:
                    self.models.pop(key, None)
                else:
                    self.models[key] = model
            return {model_id(*key)} if before != self.models.get(key) else set()
        return self._slice_changed(key, None if isinstance(event, Delete) else event.obj)

    def _slice_changed(self, key: tuple[str, str], obj: Mapping[str, Any] | None) -> set[str]:
        before = self._slices.pop(key, None)
        if before is not None:
            keys = self._by_service[before.service]
            keys.discard(key)
            if not keys:
                del self._by_service[before.service]
        if obj is not None:
            service = _dig(obj, "metadata", "labels", SERVICE_NAME_LABEL)
            if service:
                new = _Slice((key[0], str(service)), endpoints_of_slice(obj))
                self._slices[key] = new
                self._by_service.setdefault(new.service, set()).add(key)
        after = self._slices.get(key)
        if before == after:
            return set()
        return {model_id(*s.service) for s in (before, after) if s is not None}

    def _resync(self, event: Resync) -> set[str]:
        def in_scope(key: tuple[str, str]) -> bool:
            return event.namespace is None or key[0] == event.namespace

        changed: set[str] = set()
        listed = {_key(obj) for obj in event.objs}
        current = self.models if event.kind is Kind.SLM else self._slices
        for gone in [key for key in current if in_scope(key) and key not in listed]:
            changed |= self.apply(Delete(event.kind, {"metadata": {"namespace": gone[0], "name": gone[1]}}))
        for obj in event.objs:
            changed |= self.apply(Upsert(event.kind, obj))
        self.synced.add(event.kind)
        return changed

    # --- queries -----------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.synced >= {Kind.SLM, Kind.SLICE}

    def get(self, id_: str) -> Model | None:
        namespace, name = split_model_id(id_)
        return self.models.get((namespace, name)) if namespace else None

    def resolve(self, requested: str, visible: Iterable[Model] | None = None) -> Model | None:
        """The model a request names: ``namespace/name``, or a bare ``name`` that exactly one model among
        ``visible`` (default: all) has; ``:latest`` is implied, as Ollama does. None when there is none."""
        name_or_id = requested.removesuffix(":latest")
        candidates = list(self.models.values() if visible is None else visible)
        namespace, name = split_model_id(name_or_id)
        if namespace is not None:
            return next((m for m in candidates if m.namespace == namespace and m.name == name), None)
        matches = [m for m in candidates if m.name == name]
        return matches[0] if len(matches) == 1 else None

    def endpoints(self, id_: str) -> tuple[Endpoint, ...]:
        """The ready endpoints of a model, each once, in a stable order."""
        namespace, name = split_model_id(id_)
        found: dict[str, Endpoint] = {}
        for key in self._by_service.get((namespace or "", name), ()):
            for endpoint in self._slices[key].endpoints:
                if endpoint.ready:
                    found.setdefault(endpoint.url, endpoint)
        return tuple(found[url] for url in sorted(found))

    def listed(self, visible: Iterable[Model] | None = None) -> list[Model]:
        """Models that /v1/models and /api/tags show: Ready, at zero, or with a ready pod; sorted by id."""
        candidates = self.models.values() if visible is None else visible
        return sorted((m for m in candidates if m.listed or self.endpoints(m.id)), key=lambda m: m.id)
