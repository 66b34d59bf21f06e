"""The dispatcher: the catalog, what this gateway has in flight, and the choice of a pod for each request.

It lives on the event loop and does no I/O. :meth:`Dispatcher.apply` takes catalog events (from the Kubernetes
watch, or a test) and wakes the requests held for the models they changed; :meth:`Dispatcher.acquire` gives a
request its endpoint at once when the model has a ready pod, and otherwise holds it, bounded in count
(``max_held`` per model) and time (``wake_timeout``), until an event brings one. Every held request ends with an
endpoint or a :class:`~slm_gateway.errors.RefusedError` (503 with Retry-After, or 404 when the model went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection

from slm_gateway.activator import Activator
from slm_gateway.balance import bounded_affinity, hash_text, least_loaded, ring_for
from slm_gateway.catalog import Catalog, Endpoint, Event, Model
from slm_gateway.errors import ModelNotFoundError, ModelNotReadyError, RefusedError, ServerBusyError, UpstreamError
from slm_gateway.metrics import GatewayMetrics
from slm_gateway.settings import GatewaySettings
from slm_operator.api.gateway import model_id

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    """See the module docstring."""

    def __init__(
        self,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        activator: Activator,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.activator = activator
        self.catalog = Catalog()
        self.endpoint_load: Counter[str] = Counter()
        """Requests in flight per endpoint URL (forwarded, not yet answered in full)."""
        self.model_load: Counter[str] = Counter()
        """Requests per model id that are held or in flight."""
        self.held: Counter[str] = Counter()
        self._changed: dict[str, asyncio.Event] = {}
        self._turn = 0
        self._clock = clock

    # --- catalog -----------------------------------------------------------------------------------------

    def apply(self, event: Event) -> None:
        """Apply a catalog event and wake the requests held for the models it changed."""
        before = set(self.catalog.models)
        for id_ in self.catalog.apply(event):
            changed = self._changed.pop(id_, None)
            if changed is not None:
                changed.set()
        after = set(self.catalog.models)
        for key in after - before:
            self.metrics.add_model(model_id(*key))
        for key in before - after:
            if model_id(*key) not in self.model_load:
                self.metrics.remove_model(model_id(*key))

    # --- requests ----------------------------------------------------------------------------------------

    def begin(self, model: Model) -> None:
        """A request for ``model`` arrived: it counts in flight (held or answered) until :meth:`end`."""
        self.model_load[model.id] += 1
        self.metrics.inflight.labels(model.id).inc()

    def end(self, model: Model) -> None:
        self.model_load[model.id] -= 1
        self.metrics.inflight.labels(model.id).dec()
        if self.model_load[model.id] <= 0:
            del self.model_load[model.id]
            self.activator.release(model.id)
            if self.catalog.get(model.id) is None:
                self.metrics.remove_model(model.id)

    def release(self, endpoint: Endpoint) -> None:
        """The request forwarded to ``endpoint`` is over."""
        self.endpoint_load[endpoint.url] -= 1
        if self.endpoint_load[endpoint.url] <= 0:
            del self.endpoint_load[endpoint.url]

    def _choose(self, model: Model, prefix: str | None, exclude: Collection[str]) -> Endpoint | None:
        endpoints = {e.url: e for e in self.catalog.endpoints(model.id) if e.url not in exclude}
        if not endpoints:
            return None
        urls = tuple(endpoints)
        if prefix is not None and self.settings.prefix_affinity and len(urls) > 1:
            url = bounded_affinity(
                ring_for(urls), hash_text(prefix), self.endpoint_load, self.settings.affinity_load_factor
            )
        else:
            self._turn += 1
            url = least_loaded(urls, self.endpoint_load, self._turn)
        self.endpoint_load[url] += 1
        return endpoints[url]

    async def acquire(self, model: Model, prefix: str | None = None, exclude: Collection[str] = ()) -> Endpoint:
        """An endpoint for a request for ``model`` (counted in flight until :meth:`release`), holding the request
        while the model has no ready pod; RefusedError when it cannot be served. ``exclude``: endpoints that failed."""
        endpoint = self._choose(model, prefix, exclude)
        if endpoint is not None:
            self.metrics.hold_seconds.labels(model.id).observe(0.0)
            return endpoint
        retry = self.settings.retry_after
        if exclude:  # its pods refused the connection: another try is the client's to make
            raise RefusedError(UpstreamError(f'no pod of model "{model.id}" accepted the connection'), retry)
        if model.failed:
            raise RefusedError(
                ModelNotReadyError(f'model "{model.id}" failed: see `kubectl describe slm -n {model.namespace}`'),
                retry,
            )
        if self.held[model.id] >= self.settings.max_held:
            raise RefusedError(ServerBusyError(), retry)
        self.held[model.id] += 1
        self.metrics.held.labels(model.id).inc()
        start = self._clock()
        try:
            return await self._hold(model, prefix, exclude, start + self.settings.wake_timeout)
        finally:
            self.held[model.id] -= 1
            if self.held[model.id] <= 0:
                del self.held[model.id]
            self.metrics.held.labels(model.id).dec()
            self.metrics.hold_seconds.labels(model.id).observe(self._clock() - start)

    async def _hold(self, model: Model, prefix: str | None, exclude: Collection[str], deadline: float) -> Endpoint:
        while True:
            current = self.catalog.get(model.id)
            if current is None:
                raise RefusedError(ModelNotFoundError(model.id))
            endpoint = self._choose(current, prefix, exclude)
            if endpoint is not None:
                return endpoint
            if current.failed:
                failed = ModelNotReadyError(f'model "{model.id}" failed while waking')
                raise RefusedError(failed, self.settings.retry_after)
            if current.at_zero:
                self.activator.want(current)
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise RefusedError(
                    ModelNotReadyError(
                        f'model "{model.id}" has no ready replica after {self.settings.wake_timeout:g}s '
                        "(it may be waking from zero or still loading): retry later"
                    ),
                    self.settings.retry_after,
                )
            changed = self._changed.setdefault(model.id, asyncio.Event())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
