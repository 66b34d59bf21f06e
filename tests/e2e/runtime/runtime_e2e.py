"""Helpers of the runtime end-to-end tests: settings, a shared engine, a live uvicorn server, stream holders.

A module with a unique name (rather than conftest) so that test modules can import it unambiguously.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from slm_runtime.app import create_app
from slm_runtime.engines.base import (
    ArrivalCount,
    Embeddings,
    Engine,
    ModelInfo,
    SamplingParams,
    StepObserver,
    TokenSink,
)
from slm_runtime.settings import RuntimeSettings, settings_from_sources

__all__ = [
    "API_KEY",
    "CONTEXT",
    "MODEL_NAME",
    "LiveServer",
    "SharedEngine",
    "Streaming",
    "cache_home",
    "free_port",
    "make_settings",
    "metric",
]

API_KEY = "sk-test-key"
MODEL_NAME = "gemma3-270m"
CONTEXT = 1024


def cache_home() -> Path:
    return Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")


def make_settings(model: Path, **flags: Any) -> RuntimeSettings:
    base: dict[str, Any] = {
        "model": str(model),
        "model_name": MODEL_NAME,
        "context_length": CONTEXT,
        "parallel": 1,
        "max_queue": 1,
        "api_key": API_KEY,
        "max_body_bytes": 64 * 1024,
        "request_timeout": 120,
        "model_digest": "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    }
    base.update(flags)
    return settings_from_sources(base, {})


class SharedEngine(Engine):
    """The session's engine, lent to an app: everything delegates (generations take the production path, through
    ``start``), except that closing the app only detaches its step callbacks."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def info(self) -> ModelInfo:
        return self._engine.info

    def observe_steps(self, observer: StepObserver | None) -> None:
        self._engine.observe_steps(observer)

    def after_steps(self, callback: Callable[[], None] | None) -> None:
        self._engine.after_steps(callback)

    def expect_arrivals(self, count: ArrivalCount | None) -> None:
        self._engine.expect_arrivals(count)

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._engine.tokenize(text, add_special=add_special)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._engine.detokenize(tokens)

    def token_bytes(self, token_id: int) -> bytes:
        return self._engine.token_bytes(token_id)

    def validate(self, params: SamplingParams) -> None:
        self._engine.validate(params)

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        self._engine.start(slot, prompt, params, cancel, sink)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        return self._engine.embed(texts)

    def close(self) -> None:
        self._engine.observe_steps(None)
        self._engine.after_steps(None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LiveServer:
    """A uvicorn server in a background thread of the test process."""

    def __init__(self, settings: RuntimeSettings, loader: Callable[[RuntimeSettings], Engine]) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, engine_loader=loader),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-live", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("the live server did not become ready within 60 s")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {API_KEY}"}


class Streaming:
    """A streaming generation held open in a background thread until ``close()``."""

    def __init__(self, url: str, path: str, body: dict[str, Any]) -> None:
        self.started = threading.Event()
        self.closed = threading.Event()
        self.status = 0
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._run, args=(url, path, body), daemon=True)
        self._thread.start()

    def _run(self, url: str, path: str, body: dict[str, Any]) -> None:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with (
            httpx.Client(base_url=url, headers=headers, timeout=120) as client,
            client.stream("POST", path, json=body) as response,
        ):
            self.status = response.status_code
            for line in response.iter_lines():
                if line:
                    self.lines.append(line)
                if len(self.lines) >= 3:
                    self.started.set()
                if self.closed.is_set():
                    break  # leaving the block closes the connection mid-stream
        self.started.set()

    def close(self) -> None:
        self.closed.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def metric(http: httpx.Client, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
