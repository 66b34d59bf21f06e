"""Admission at the door: a generation request gets its place in line, or its 503, before its body is read.

The routes that take a generation slot (:data:`GENERATION_ENDPOINTS` of each API's router) pass through
:class:`AdmissionGate`. It asks the model service for a :class:`~slm_runtime.scheduler.Ticket` (a place among the
``parallel + max_queue`` requests the server holds) from the headers alone: when there is none, the request gets
503 at once, without its body being read, parsed, rendered or tokenized; when there is one, the request carries it
to the scheduler, which then never refuses it (its place was counted), and the gate gives back a ticket the
request did not use (it failed validation, or needed no slot).

Refusals are cheap but not free, and an impatient client retries at once: a few dozen of them, each retrying the
moment its 503 arrives, would keep the event loop (and on a small machine the CPU) busy refusing, and the tokens of
the admitted requests would wait behind them. So the gate answers refusals at a bounded rate
(:class:`RefusalPacer`): the first ones at once, a storm of them spaced out (each still within
:data:`MAX_REFUSAL_DELAY` seconds). A paced refusal costs a timer while it waits, nothing else.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from slm_runtime.accesslog import record_of_scope
from slm_runtime.auth import flavor_of
from slm_runtime.errors import RETRY_AFTER_SECONDS, ApiFlavor, ServerBusyError, error_body
from slm_runtime.service import ModelService

__all__ = [
    "MAX_REFUSAL_DELAY",
    "REFUSALS_PER_SECOND",
    "REFUSAL_BURST",
    "TICKET_STATE",
    "AdmissionGate",
    "RefusalPacer",
    "generation_paths",
]

TICKET_STATE = "admission_ticket"
"""The request-state attribute that carries a request's :class:`~slm_runtime.scheduler.Ticket` to the scheduler."""

REFUSALS_PER_SECOND = 50.0
"""The rate 503s go out at once a storm of them has used up :data:`REFUSAL_BURST`. A refusal costs the event loop
about half a millisecond (most of it uvicorn's HTTP parsing and two socket writes): 50 per second keep it under 3%
of a core, and the impatient clients' own work in proportion."""

REFUSAL_BURST = 20
"""Refusals answered at once before pacing starts (so an occasional 503 is never delayed)."""

MAX_REFUSAL_DELAY = 1.0
"""The longest a refusal is held back (the ``Retry-After`` a polite client waits anyway)."""


def generation_paths(routes: list[BaseRoute], endpoints: set[Callable[..., Any]]) -> frozenset[str]:
    """The paths of the POST routes whose endpoint is one of ``endpoints`` (the routes the gate guards)."""
    return frozenset(
        route.path
        for route in routes
        if isinstance(route, APIRoute) and route.endpoint in endpoints and "POST" in (route.methods or ())
    )


class RefusalPacer:
    """Spaces refusals out: at most ``burst`` at once, then ``rate`` per second, none held over ``max_delay``.

    A generic cell rate algorithm: ``_due`` is when the next refusal would be on time; it moves ``1 / rate`` per
    refusal and never runs further ahead of the clock than the burst plus ``max_delay``.
    """

    def __init__(
        self,
        rate: float = REFUSALS_PER_SECOND,
        burst: int = REFUSAL_BURST,
        max_delay: float = MAX_REFUSAL_DELAY,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if rate <= 0 or burst < 1 or max_delay < 0:
            raise ValueError("a refusal pacer needs rate > 0, burst >= 1 and max_delay >= 0")
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._max_delay = max_delay
        self._clock = clock
        self._due = -float("inf")

    def delay(self) -> float:
        """Seconds the next refusal waits (0: at once); counts it."""
        now = self._clock() if self._clock is not None else asyncio.get_running_loop().time()
        due = min(max(self._due, now), now + self._tolerance + self._max_delay)
        self._due = due + self._interval
        return max(0.0, due - self._tolerance - now)


class AdmissionGate:
    """ASGI middleware: a ticket or a 503 for every POST to ``paths``, from the headers alone (module docstring)."""

    def __init__(self, app: ASGIApp, *, paths: frozenset[str], pacer: RefusalPacer | None = None) -> None:
        self.app = app
        self.paths = paths
        self.pacer = pacer or RefusalPacer()
        self._refusals: dict[ApiFlavor, bytes] = {
            flavor: json.dumps(error_body(ServerBusyError(), flavor)).encode() for flavor in ("ollama", "openai")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        state = scope.get("state") or {}
        service = state.get("service")
        if not isinstance(service, ModelService):  # no lifespan ran: nothing to admit to
            await self.app(scope, receive, send)
            return
        try:
            ticket = service.reserve()
        except ServerBusyError:
            await self._refuse(scope, send, service)
            return
        state[TICKET_STATE] = ticket
        try:
            await self.app(scope, receive, send)
        finally:
            ticket.release()

    async def _refuse(self, scope: Scope, send: Send, service: ModelService) -> None:
        flavor = flavor_of(scope["path"])
        record = record_of_scope(scope)
        record.outcome = "busy"
        service.metrics.requests.labels(service.name, flavor, "busy").inc()
        delay = self.pacer.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        body = self._refusals[flavor]
        await send(
            {
                "type": "http.response.start",
                "status": ServerBusyError.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"retry-after", str(RETRY_AFTER_SECONDS).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
