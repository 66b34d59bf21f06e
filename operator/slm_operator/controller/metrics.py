"""The operator's own Prometheus metrics, served with /healthz on the operator's metrics port."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

__all__ = [
    "API_WRITES",
    "FALLBACKS",
    "MANAGED",
    "RECONCILES",
    "RECONCILE_SECONDS",
    "STAGE_SECONDS",
    "serve_metrics",
    "set_phase_counts",
]

RECONCILES = Counter("slm_operator_reconciles_total", "Reconciles of SLMDeployments by result.", ["result"])
RECONCILE_SECONDS = Histogram(
    "slm_operator_reconcile_duration_seconds",
    "Time spent in one reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# Where the time from an SLMDeployment's watch event to its applies goes (docs/operator-scale.md): "listing" from the
# event to the own watches' first listings (0 once listed), "slot" waiting for one of the reconcile slots, "render"
# the reconcile less its writes, "apply" the writes of a reconcile that applied something (answered by the apiserver).
STAGE_SECONDS = Histogram(
    "slm_operator_stage_seconds",
    "Time of each stage from an SLMDeployment's event to its applies.",
    ["stage"],
    buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 5, 10, 30),
)
MANAGED = Gauge("slm_operator_managed_slmdeployments", "SLMDeployments managed, by phase.", ["phase"])
FALLBACKS = Counter("slm_operator_hardware_fallbacks_total", "Moves to a fallback accelerator.", ["to"])
API_WRITES = Counter(
    "slm_operator_api_writes_total", "Write requests the operator sent to the apiserver.", ["verb", "kind"]
)


def serve_metrics(port: int, ready: Callable[[], bool], host: str = "0.0.0.0") -> ThreadingHTTPServer:
    """Start /metrics, /healthz (the process answers) and /readyz (``ready()``: this replica leads) on a
    daemon thread; returns the server (call shutdown() to stop)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/metrics"):
                self._reply(200, generate_latest(), CONTENT_TYPE_LATEST)
            elif self.path.startswith("/healthz"):
                self._reply(200, b"ok\n", "text/plain")
            elif self.path.startswith("/readyz"):
                ok = ready()
                self._reply(200 if ok else 503, b"leader\n" if ok else b"standby\n", "text/plain")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def set_phase_counts(phases: Iterable[str]) -> None:
    counts: dict[str, int] = {}
    for phase in phases:
        counts[phase] = counts.get(phase, 0) + 1
    for phase in ("Pending", "Downloading", "Loading", "Ready", "Degraded", "Failed"):
        MANAGED.labels(phase=phase).set(counts.get(phase, 0))
