"""Prometheus metrics of one server, in their own registry (no process-global state).

Every family is prefixed ``slm_`` and labelled by ``model``; request families also by ``api``
(ollama, openai).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE", "REQUESTS_INFLIGHT", "Metrics"]

CONTENT_TYPE = CONTENT_TYPE_LATEST

#: Requests a pod holds, running plus waiting: the per-pod load that in-flight autoscaling targets (the
#: operator's HPA and ScaledObject take the name from here).
REQUESTS_INFLIGHT = "slm_requests_inflight"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_BATCH_SEQUENCE_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
_BATCH_TOKEN_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The metric families; ``model`` is fixed per server, ``api`` is passed per observation."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        request_labels = ["model", "api"]
        self.time_to_first_token = Histogram(
            "slm_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token (queueing included).",
            request_labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.inter_token_latency = Histogram(
            "slm_inter_token_latency_seconds",
            "Seconds between consecutive generated tokens of one request.",
            request_labels,
            buckets=_TOKEN_BUCKETS,
            registry=r,
        )
        self.request_duration = Histogram(
            "slm_request_duration_seconds",
            "Seconds from a generation or embedding request's arrival to its last byte of output.",
            request_labels,
            buckets=_DURATION_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "slm_request_queue_seconds",
            "Seconds a request waited for a free slot.",
            request_labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "slm_requests",
            "Generation and embedding requests finished, by outcome (ok, error, cancelled, busy).",
            [*request_labels, "outcome"],
            registry=r,
        )
        self.prompt_tokens = Counter("slm_prompt_tokens", "Prompt tokens processed.", request_labels, registry=r)
        self.generation_tokens = Counter("slm_generation_tokens", "Tokens generated.", request_labels, registry=r)
        self.batch_sequences = Histogram(
            "slm_batch_sequences",
            "Sequences decoded together in one engine step (1 when the engine runs one sequence per step).",
            ["model"],
            buckets=_BATCH_SEQUENCE_BUCKETS,
            registry=r,
        )
        self.batch_tokens = Histogram(
            "slm_batch_tokens",
            "Tokens evaluated in one engine step: one per generating sequence plus prompt chunks.",
            ["model"],
            buckets=_BATCH_TOKEN_BUCKETS,
            registry=r,
        )
        self.requests_running = Gauge(
            "slm_requests_running", "Requests holding a generation slot.", ["model"], registry=r
        )
        self.requests_waiting = Gauge(
            "slm_requests_waiting", "Requests queued for a generation slot.", ["model"], registry=r
        )
        self.requests_inflight = Gauge(
            REQUESTS_INFLIGHT,
            "Requests in this server, running plus waiting (the in-flight autoscaling metric).",
            ["model"],
            registry=r,
        )
        self.model_load_seconds = Gauge(
            "slm_model_load_seconds",
            "Seconds the model took to load (warm-up included).",
            ["model"],
            registry=r,
        )
        self.model_info = Gauge(
            "slm_model_info",
            "The served model; always 1.",
            ["model", "format", "engine", "quantization", "digest"],
            registry=r,
        )
        self.requests_running.labels(model).set(0)
        self.requests_waiting.labels(model).set(0)
        self.requests_inflight.labels(model).set(0)
        self._batch_sequences = self.batch_sequences.labels(model)
        self._batch_tokens = self.batch_tokens.labels(model)

    def scheduler_changed(self, running: int, waiting: int) -> None:
        self.requests_running.labels(self.model).set(running)
        self.requests_waiting.labels(self.model).set(waiting)
        self.requests_inflight.labels(self.model).set(running + waiting)

    def batch_step(self, sequences: int, tokens: int) -> None:
        """One engine decode step (called from the engine's thread)."""
        self._batch_sequences.observe(sequences)
        self._batch_tokens.observe(tokens)

    def set_model_info(self, *, format: str, engine: str, quantization: str, digest: str) -> None:
        self.model_info.labels(self.model, format, engine, quantization, digest).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)
