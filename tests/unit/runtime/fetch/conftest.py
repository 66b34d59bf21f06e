"""Fixtures for the fetcher tests: local servers (see fetchtest_servers), fast settings, a cache folder."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fetchtest_servers import FakeServer

from slm_runtime.fetch import FetchSettings


@pytest.fixture
def make_server() -> Iterator[Callable[[], FakeServer]]:
    servers: list[FakeServer] = []

    def start() -> FakeServer:
        servers.append(FakeServer())
        return servers[-1]

    yield start
    for s in servers:
        s.close()


@pytest.fixture
def server(make_server: Callable[[], FakeServer]) -> FakeServer:
    return make_server()


@pytest.fixture
def settings(tmp_path: Path) -> FetchSettings:
    """Short timeouts and tiny backoffs so faults resolve in milliseconds; no environment leaks in."""
    return FetchSettings(
        connect_timeout=2.0,
        read_timeout=1.0,  # generous: the tests share two busy cores; the stall test waits past it once
        max_attempts=4,
        backoff_base=0.01,
        backoff_max=0.05,
        pvc_root=tmp_path / "pvc",
    )


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "cache"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_ENDPOINT", "SLM_OLLAMA_REGISTRY", "SLM_PULL_AUTHORIZATION"):
        monkeypatch.delenv(name, raising=False)
