"""Two slots on the real model, per-request templates and context, and the access log's prompt switch."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, Streaming, make_settings
from starlette.testclient import TestClient

from slm_runtime.app import create_app
from slm_runtime.engines import load_engine
from slm_runtime.engines.base import Engine
from slm_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.model

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def two_slot_server(gguf_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(gguf_path, parallel=2, max_queue=0, context_length=512), load_engine)
    server.start()
    yield server
    server.stop()


def test_two_generations_run_at_once_and_stay_greedy(two_slot_server: LiveServer) -> None:
    prompts = ["The ocean is", "My favourite food is"]
    options = {"temperature": 0, "num_predict": 40}
    with httpx.Client(base_url=two_slot_server.url, headers=HEADERS, timeout=120) as client:
        alone = [
            client.post(
                "/api/generate", json={"model": MODEL_NAME, "prompt": p, "stream": False, "options": options}
            ).json()["response"]
            for p in prompts
        ]
        results: dict[int, str] = {}
        running_seen: list[float] = []

        def generate(index: int) -> None:
            body = {"model": MODEL_NAME, "prompt": prompts[index], "stream": False, "options": options}
            results[index] = client.post("/api/generate", json=body).json()["response"]

        def running() -> float:
            for line in client.get("/metrics").text.splitlines():
                if line.startswith("slm_requests_running{"):
                    return float(line.rsplit(" ", 1)[1])
            return 0.0

        threads = [threading.Thread(target=generate, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            running_seen.append(running())
            time.sleep(0.05)
        for thread in threads:
            thread.join()
        assert max(running_seen) == 2
        assert [results[0], results[1]] == alone
        # Both slots busy and no queue: a third request is refused.
        long = {"temperature": 0.7, "num_predict": 300}
        holders = [
            Streaming(two_slot_server.url, "/api/generate", {"model": MODEL_NAME, "prompt": p, "options": long})
            for p in prompts
        ]
        deadline = time.monotonic() + 30
        while running() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        busy = client.post("/api/generate", json={"model": MODEL_NAME, "prompt": "x", "stream": False})
        for holder in holders:
            holder.close()
        assert busy.status_code == 503


def test_request_template_system_and_context(http: httpx.Client, llama_engine: Engine) -> None:
    first = http.post(
        "/api/generate",
        json={
            "model": MODEL_NAME,
            "prompt": "What is 2+2?",
            "system": "Answer briefly.",
            "template": "{{ if .System }}{{ .System }}\n{{ end }}Q: {{ .Prompt }}\nA:{{ .Response }}",
            "stream": False,
            "options": {"temperature": 0, "num_predict": 8},
        },
    ).json()
    rendered = llama_engine.tokenize("Answer briefly.\nQ: What is 2+2?\nA:")
    assert first["context"][: first["prompt_eval_count"]] == rendered
    follow = http.post(
        "/api/generate",
        json={"model": MODEL_NAME, "context": first["context"], "stream": False, "options": {"num_predict": 4}},
    ).json()
    assert follow["prompt_eval_count"] == len(first["context"])
    assert follow["eval_count"] == 4


@pytest.mark.parametrize("log_prompts", [False, True])
def test_access_log_names_caller_and_counts(
    log_prompts: bool,
    gguf_path: Path,
    shared_loader: Callable[[RuntimeSettings], Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = create_app(make_settings(gguf_path, log_prompts=log_prompts), engine_loader=shared_loader)
    with TestClient(app, headers=HEADERS) as client:
        while client.get("/readyz").status_code != 200:
            time.sleep(0.02)
        with caplog.at_level(logging.INFO, logger="slm_runtime.access"):
            body = {"model": MODEL_NAME, "prompt": "secret words", "stream": False, "options": {"num_predict": 3}}
            assert client.post("/api/generate", json=body).status_code == 200
    lines = [
        r.getMessage() for r in caplog.records if r.name == "slm_runtime.access" and "/api/generate" in r.getMessage()
    ]
    assert len(lines) == 1
    line = lines[0]
    assert "status=200" in line and "completion_tokens=3" in line and "caller=key:" in line
    assert API_KEY not in line
    assert ("secret words" in line) is log_prompts
