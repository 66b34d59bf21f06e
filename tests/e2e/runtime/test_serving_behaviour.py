"""Server behaviour on the real model: queueing, disconnects, auth, request errors, readiness, timeouts."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from runtime_e2e import API_KEY, CONTEXT, MODEL_NAME, LiveServer, Streaming, make_settings, metric
from starlette.testclient import TestClient

from slm_runtime.app import create_app
from slm_runtime.engines.base import Engine
from slm_runtime.errors import OLLAMA_SERVER_BUSY
from slm_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.model

# Greedy "Tell" runs to the 900-token limit on Gemma 3 270M (no end of text), so these requests outlast any
# timeout the tests set; a sampled draw may stop early on a fast machine.
LONG = {"temperature": 0, "num_predict": 900}


def raw_request(server: LiveServer, path: str, body: dict[str, Any]) -> socket.socket:
    """Send a request on a bare socket and leave it unanswered (close the socket to hang up)."""
    data = json.dumps(body).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {API_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(head.encode() + data)
    return sock


def quick_generate(http: httpx.Client) -> httpx.Response:
    return http.post(
        "/api/generate",
        json={"model": MODEL_NAME, "prompt": "Hi", "stream": False, "options": {"num_predict": 3}},
    )


def test_disconnect_mid_stream_frees_the_slot(http: httpx.Client, live_server: LiveServer) -> None:
    cancelled_before = metric(http, "slm_requests_total", api="ollama", outcome="cancelled")
    stream = Streaming(live_server.url, "/api/generate", {"model": MODEL_NAME, "prompt": "Tell", "options": LONG})
    assert stream.started.wait(60) and stream.status == 200
    stream.close()
    started = time.perf_counter()
    response = quick_generate(http)
    elapsed = time.perf_counter() - started
    assert response.status_code == 200 and response.json()["done"] is True
    assert elapsed < 5, f"the next request waited {elapsed:.1f}s: the slot was not freed"
    assert metric(http, "slm_requests_total", api="ollama", outcome="cancelled") == cancelled_before + 1
    assert metric(http, "slm_requests_running") == 0


def test_queue_full_is_503_with_ollamas_message(http: httpx.Client, live_server: LiveServer) -> None:
    # parallel=1, max_queue=1: one generation runs, one waits, the third is refused.
    running = Streaming(live_server.url, "/api/generate", {"model": MODEL_NAME, "prompt": "Tell", "options": LONG})
    assert running.started.wait(60)
    # The queued client is a bare socket, so that it can hang up while no response has started.
    waiting = raw_request(live_server, "/v1/completions", {"model": MODEL_NAME, "prompt": "B", "stream": True})
    deadline = time.monotonic() + 10
    while metric(http, "slm_requests_waiting") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(http, "slm_requests_waiting") == 1
    busy = http.post("/api/chat", json={"model": MODEL_NAME, "messages": [{"role": "user", "content": "C"}]})
    assert busy.status_code == 503
    assert busy.json() == {"error": OLLAMA_SERVER_BUSY}
    busy_openai = http.post("/v1/chat/completions", json={"model": MODEL_NAME, "messages": [{"role": "user"}]})
    assert busy_openai.status_code == 503
    assert busy_openai.json()["error"]["message"] == OLLAMA_SERVER_BUSY
    assert busy_openai.json()["error"]["code"] == "server_busy"
    # The queued client hangs up: it leaves the queue while the first generation still runs.
    cancelled_before = metric(http, "slm_requests_total", api="openai", outcome="cancelled")
    waiting.close()
    deadline = time.monotonic() + 5
    while metric(http, "slm_requests_waiting") > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(http, "slm_requests_waiting") == 0
    assert metric(http, "slm_requests_running") == 1
    assert metric(http, "slm_requests_total", api="openai", outcome="cancelled") == cancelled_before + 1
    running.close()
    assert quick_generate(http).status_code == 200


def test_auth_required_except_health_and_metrics(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.url, timeout=30) as anonymous:
        for path in ("/healthz", "/readyz", "/metrics", "/"):
            assert anonymous.get(path).status_code == 200, path
        ollama = anonymous.get("/api/tags")
        assert ollama.status_code == 401
        assert ollama.headers["www-authenticate"] == "Bearer"
        assert "API key" in ollama.json()["error"]
        openai = anonymous.post("/v1/chat/completions", json={}, headers={"Authorization": "Bearer nope"})
        assert openai.status_code == 401
        assert openai.json()["error"]["code"] == "invalid_api_key"
        assert anonymous.post("/api/embed", headers={"Authorization": API_KEY}).status_code == 401  # no Bearer


def test_malformed_json_and_wrong_types_are_400_naming_the_field(http: httpx.Client) -> None:
    broken = http.post("/api/generate", content=b'{"model": "x", ', headers={"content-type": "application/json"})
    assert broken.status_code == 400
    assert "invalid JSON" in broken.json()["error"]
    wrong = http.post("/api/chat", json={"model": MODEL_NAME, "messages": [{"role": "robot", "content": "x"}]})
    assert wrong.status_code == 400
    assert "messages[0].role" in wrong.json()["error"]
    options = http.post("/api/generate", json={"model": MODEL_NAME, "prompt": "x", "options": {"top_k": "many"}})
    assert options.status_code == 400 and "options.top_k" in options.json()["error"]
    openai = http.post("/v1/chat/completions", json={"model": MODEL_NAME, "messages": "hello"})
    assert openai.status_code == 400
    assert openai.json()["error"]["param"] == "messages"
    assert openai.json()["error"]["type"] == "invalid_request_error"
    nameless = [{"type": "function", "function": {"parameters": {}}}]
    for path, body in (
        ("/api/chat", {"messages": [{"role": "user", "content": "x"}], "tools": nameless}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}], "tools": nameless}),
        ("/api/generate", {"prompt": "x", "suffix": "y"}),
    ):
        unsupported = http.post(path, json={"model": MODEL_NAME, **body})
        assert unsupported.status_code == 400, path
    missing = http.post("/v1/embeddings", json={"model": MODEL_NAME})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"


def test_json_schema_that_admits_nothing_is_400_before_streaming(http: httpx.Client) -> None:
    for stream in (False, True):
        body = {"model": MODEL_NAME, "prompt": "x", "format": {"enum": []}, "stream": stream}
        response = http.post("/api/generate", json=body)
        assert response.status_code == 400, stream
        assert "admits no value" in response.json()["error"]
    openai = http.post(
        "/v1/chat/completions",
        json={
            "model": MODEL_NAME,
            "messages": [{"role": "user", "content": "x"}],
            "stream": True,
            "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"not": {}}}},
        },
    )
    assert openai.status_code == 400 and openai.json()["error"]["param"] == "response_format"


def test_oversized_body_is_413(http: httpx.Client) -> None:
    big = {"model": MODEL_NAME, "prompt": "x" * (70 * 1024)}
    assert http.post("/api/generate", json=big).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield json.dumps(big).encode()

    response = http.post("/v1/completions", content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_model_is_404_on_every_generation_route(http: httpx.Client) -> None:
    for path, body in (
        ("/api/generate", {"model": "other", "prompt": "x"}),
        ("/api/chat", {"model": "other", "messages": []}),
        ("/api/embed", {"model": "other", "input": "x"}),
        ("/api/show", {"model": "other"}),
        ("/v1/completions", {"model": "other", "prompt": "x"}),
        ("/v1/embeddings", {"model": "other", "input": "x"}),
    ):
        response = http.post(path, json=body)
        assert response.status_code == 404, path
        assert "other" in json.dumps(response.json())


def test_prompt_longer_than_context(http: httpx.Client) -> None:
    prompt = "word " * (CONTEXT + 100)
    body = {"model": MODEL_NAME, "prompt": prompt, "stream": False, "truncate": False}
    refused = http.post("/api/generate", json=body)
    assert refused.status_code == 400
    assert f"context length of {CONTEXT} tokens" in refused.json()["error"]
    openai = http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": prompt})
    assert openai.status_code == 400 and openai.json()["error"]["code"] == "context_length_exceeded"
    truncated = http.post(  # Ollama truncates unless told not to
        "/api/generate", json={"model": MODEL_NAME, "prompt": prompt, "stream": False, "options": {"num_predict": 2}}
    )
    assert truncated.status_code == 200
    assert truncated.json()["prompt_eval_count"] < CONTEXT


def test_curl_style_form_content_type_is_read_as_json(live_server: LiveServer) -> None:
    body = json.dumps({"model": MODEL_NAME, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}})
    response = httpx.post(
        live_server.url + "/api/generate",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded", "Authorization": f"Bearer {API_KEY}"},
        timeout=60,
    )
    assert response.status_code == 200 and response.json()["eval_count"] == 1


def test_empty_prompt_loads_the_model_like_ollama(http: httpx.Client) -> None:
    response = http.post("/api/generate", json={"model": MODEL_NAME})
    assert response.json()["done_reason"] == "load"
    chat = http.post("/api/chat", json={"model": MODEL_NAME, "messages": []})
    assert chat.json()["message"] == {"role": "assistant", "content": ""}


def test_readyz_is_503_while_loading_then_200(
    gguf_path: Path, shared_loader: Callable[[RuntimeSettings], Engine]
) -> None:
    gate = threading.Event()

    def slow_loader(settings: RuntimeSettings) -> Engine:
        gate.wait(30)
        return shared_loader(settings)

    app = create_app(make_settings(gguf_path), engine_loader=slow_loader)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        loading = client.get("/readyz")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        assert client.get("/api/tags", headers={"Authorization": f"Bearer {API_KEY}"}).json() == {"models": []}
        gate.set()
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/readyz").json() == {"status": "ready", "model": MODEL_NAME}


def test_failed_load_fails_health(tmp_path: Path) -> None:
    app = create_app(make_settings(tmp_path / "missing.gguf"))
    with TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/healthz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get("/healthz").status_code == 500
        assert client.get("/readyz").json()["status"] == "failed"
        response = client.post(
            "/api/generate",
            json={"model": MODEL_NAME, "prompt": "x"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        assert response.status_code == 503 and "failed to load" in response.json()["error"]


def test_request_timeout_ends_the_stream_with_an_error(
    gguf_path: Path, shared_loader: Callable[[RuntimeSettings], Engine]
) -> None:
    app = create_app(make_settings(gguf_path, request_timeout=1.5), engine_loader=shared_loader)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with TestClient(app, headers=headers) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.02)
        body = {"model": MODEL_NAME, "prompt": "Tell", "options": LONG}
        lines = client.post("/api/generate", json=body).text.strip().splitlines()
        assert len(lines) > 2
        assert "request timeout of 1.5s" in json.loads(lines[-1])["error"]
        sse = client.post(
            "/v1/completions",
            json={"model": MODEL_NAME, "prompt": "Tell", "max_tokens": 900, "temperature": 0, "stream": True},
        )
        events = [e for e in sse.text.split("\n\n") if e]
        assert json.loads(events[-1].removeprefix("data: "))["error"]["code"] == "timeout"
        whole = client.post("/api/generate", json={**body, "stream": False})
        assert whole.status_code == 504
