"""What every model request of either API begins and ends with.

The prelude (:func:`begin_request`): note the arrival time, name the model in the access record, refuse a model
that is not the served one. The bookkeeping (:meth:`RequestContext.track`): a generation or an embedding ends
with its outcome (ok, error, cancelled, busy) in the access record and the request counter, and its duration.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from types import TracebackType

from starlette.requests import Request

from slm_runtime.accesslog import AccessRecord, record_of
from slm_runtime.admission import TICKET_STATE
from slm_runtime.engines.base import Engine
from slm_runtime.errors import ApiFlavor, ServerBusyError
from slm_runtime.scheduler import Ticket
from slm_runtime.service import ModelService

__all__ = ["RequestContext", "begin_request"]


@dataclass(frozen=True)
class RequestContext:
    """One model request: its service, API, arrival time (``perf_counter``), access record, and the place the
    admission gate reserved for it (:mod:`slm_runtime.admission`; None where no gate ran)."""

    service: ModelService
    api: ApiFlavor
    started: float
    record: AccessRecord
    ticket: Ticket | None = None

    @property
    def labels(self) -> tuple[str, str]:
        """The (model, api) labels of the request metrics."""
        return (self.service.name, self.api)

    @property
    def deadline(self) -> float:
        """When the request times out (a ``perf_counter`` time)."""
        return self.started + self.service.settings.server.request_timeout

    def elapsed_ns(self) -> int:
        return int((time.perf_counter() - self.started) * 1e9)

    async def engine(self) -> Engine:
        """The engine, once the model has loaded (ModelNotReadyError when that takes past the deadline)."""
        return await self.service.wait_ready(self.deadline)

    def track(self) -> _Tracking:
        """A ``with`` block whose end counts the request by its outcome and observes its duration."""
        return _Tracking(self)


def begin_request(service: ModelService, request: Request, model: str, api: ApiFlavor) -> RequestContext:
    """Start a request for ``model``: ModelNotFoundError (or a 400 when it is empty) unless it is the served one."""
    ticket = getattr(request.state, TICKET_STATE, None)
    context = RequestContext(
        service, api, time.perf_counter(), record_of(request.state), ticket if isinstance(ticket, Ticket) else None
    )
    context.record.model = model
    service.check_model(model)
    return context


class _Tracking:
    def __init__(self, context: RequestContext) -> None:
        self._context = context

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        context = self._context
        if error is None:
            outcome = "ok"
        elif isinstance(error, ServerBusyError):
            outcome = "busy"
        elif isinstance(error, GeneratorExit | asyncio.CancelledError):
            outcome = "cancelled"
        else:
            outcome = "error"
        context.record.outcome = outcome
        metrics = context.service.metrics
        metrics.requests.labels(*context.labels, outcome).inc()
        metrics.request_duration.labels(*context.labels).observe(time.perf_counter() - context.started)
