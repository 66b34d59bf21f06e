"""/metrics after real traffic: every family present, parsed by prometheus_client, counters consistent."""

from __future__ import annotations

from collections import defaultdict

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_e2e import MODEL_NAME

pytestmark = pytest.mark.model

FAMILIES = {
    "slm_time_to_first_token_seconds": "histogram",
    "slm_inter_token_latency_seconds": "histogram",
    "slm_request_duration_seconds": "histogram",
    "slm_request_queue_seconds": "histogram",
    "slm_requests": "counter",
    "slm_prompt_tokens": "counter",
    "slm_generation_tokens": "counter",
    "slm_requests_running": "gauge",
    "slm_requests_waiting": "gauge",
    "slm_model_load_seconds": "gauge",
    "slm_model_info": "gauge",
}


def scrape(http: httpx.Client) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = defaultdict(float)
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] += sample.value
    return types, samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def test_metrics_families_and_counters_follow_traffic(http: httpx.Client) -> None:
    _, before = scrape(http)
    generated = {"ollama": 0, "openai": 0}
    prompted = {"ollama": 0, "openai": 0}
    token_gaps = {"ollama": 0, "openai": 0}
    for prompt in ("Hello", "Good morning"):
        body = http.post(
            "/api/generate",
            json={"model": MODEL_NAME, "prompt": prompt, "stream": False, "options": {"num_predict": 5}},
        ).json()
        generated["ollama"] += body["eval_count"]
        prompted["ollama"] += body["prompt_eval_count"]
        token_gaps["ollama"] += body["eval_count"] - 1
    embedded = http.post("/api/embed", json={"model": MODEL_NAME, "input": "metrics"}).json()
    prompted["ollama"] += embedded["prompt_eval_count"]
    chat = http.post(
        "/v1/chat/completions",
        json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0},
    ).json()
    generated["openai"] += chat["usage"]["completion_tokens"]
    prompted["openai"] += chat["usage"]["prompt_tokens"]
    token_gaps["openai"] += chat["usage"]["completion_tokens"] - 1
    assert http.post("/api/generate", json={"model": "nope", "prompt": "x"}).status_code == 404

    types, after = scrape(http)
    for name, kind in FAMILIES.items():
        assert types.get(name) == kind, name

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    labels = {"model": MODEL_NAME}
    assert delta("slm_requests_total", api="ollama", outcome="ok", **labels) == 3
    assert delta("slm_requests_total", api="openai", outcome="ok", **labels) == 1
    for api in ("ollama", "openai"):
        assert delta("slm_generation_tokens_total", api=api, **labels) == generated[api]
        assert delta("slm_prompt_tokens_total", api=api, **labels) == prompted[api]
        assert delta("slm_inter_token_latency_seconds_count", api=api, **labels) == token_gaps[api]
    assert delta("slm_time_to_first_token_seconds_count", api="ollama", **labels) == 2
    assert delta("slm_time_to_first_token_seconds_count", api="openai", **labels) == 1
    assert delta("slm_request_duration_seconds_count", api="ollama", **labels) == 3
    assert delta("slm_request_queue_seconds_count", api="ollama", **labels) == 3
    assert delta("slm_request_queue_seconds_count", api="openai", **labels) == 1
    assert value(after, "slm_requests_running", **labels) == 0
    assert value(after, "slm_requests_waiting", **labels) == 0
    assert value(after, "slm_model_load_seconds", **labels) > 0
    info = {
        "model": MODEL_NAME,
        "format": "gguf",
        "engine": "llama-cpp",
        "quantization": "Q4_K_M",
        "digest": "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    }
    assert value(after, "slm_model_info", **info) == 1
