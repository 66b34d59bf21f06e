"""The gateway's Prometheus metrics, per model (label GATEWAY_MODEL_LABEL = ``namespace/name``).

The two gauges KEDA queries are named by the operator–gateway contract (slm_operator.api.gateway); the others
are the gateway's own. A request for a model that does not exist (or that the caller may not see) is counted
with an empty model label, so that made-up names cannot grow the label set.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from slm_operator.api.gateway import GATEWAY_HELD, GATEWAY_INFLIGHT, GATEWAY_MODEL_LABEL

__all__ = [
    "HOLD_SECONDS",
    "REQUESTS_TOTAL",
    "TIME_TO_FIRST_BYTE",
    "UPSTREAM_ERRORS",
    "GatewayMetrics",
]

REQUESTS_TOTAL = "slm_gateway_requests"
"""Counter (exported as ``slm_gateway_requests_total``): answered requests by model and HTTP status code
(499 when the client went away first)."""
HOLD_SECONDS = "slm_gateway_hold_seconds"
"""Histogram: how long requests waited for a ready pod (zero when one was ready), by model."""
TIME_TO_FIRST_BYTE = "slm_gateway_time_to_first_byte_seconds"
"""Histogram: from the request's arrival to the first response byte from the model, hold included."""
UPSTREAM_ERRORS = "slm_gateway_upstream_errors"
"""Counter (``slm_gateway_upstream_errors_total``): failures talking to model pods, by model and reason
(connect, timeout, protocol)."""

_HOLD_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    """One registry with every gateway metric (a registry per instance, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        model = GATEWAY_MODEL_LABEL
        self.inflight = Gauge(
            GATEWAY_INFLIGHT,
            "Requests for the model that the gateway is answering or holding.",
            [model],
            registry=self.registry,
        )
        self.held = Gauge(
            GATEWAY_HELD, "Requests held while the model has no ready pod.", [model], registry=self.registry
        )
        self.requests = Counter(
            REQUESTS_TOTAL, "Requests answered, by HTTP status code.", [model, "code"], registry=self.registry
        )
        self.hold_seconds = Histogram(
            HOLD_SECONDS, "Seconds waited for a ready pod.", [model], buckets=_HOLD_BUCKETS, registry=self.registry
        )
        self.time_to_first_byte = Histogram(
            TIME_TO_FIRST_BYTE,
            "Seconds from the request to the first response byte from the model.",
            [model],
            buckets=_TTFB_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            UPSTREAM_ERRORS, "Failures talking to model pods, by reason.", [model, "reason"], registry=self.registry
        )

    def add_model(self, model: str) -> None:
        """Export the gauges of a model at 0, so KEDA's query finds a series before the first request."""
        self.inflight.labels(model)
        self.held.labels(model)

    def remove_model(self, model: str) -> None:
        for gauge in (self.inflight, self.held):
            with contextlib.suppress(KeyError):
                gauge.remove(model)

    def render(self) -> bytes:
        return generate_latest(self.registry)
