"""The runtime served from this process: in the foreground (`slm serve`) or on a thread (`slm run`, `bench`).

Both use the runtime's own ``create_app(settings)``; uvicorn owns Ctrl-C in the foreground (SIGINT and
SIGTERM end it gracefully: running generations drain, the engine closes).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import httpx

from slm_runtime.settings import RuntimeSettings

__all__ = [
    "BackgroundServer",
    "ModelLoadError",
    "ServerError",
    "free_port",
    "port_in_use",
    "serve_foreground",
    "wait_ready",
]

log = logging.getLogger(__name__)


class ServerError(RuntimeError):
    """The local server could not start or never became ready."""


def port_in_use(host: str, port: int) -> bool:
    """Whether something already listens on host:port."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class ModelLoadError(ServerError):
    """The runtime reported that loading the model failed."""


def _status(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    return str(body.get("status", "")) if isinstance(body, dict) else ""


def wait_ready(url: str, *, timeout: float, alive: Callable[[], bool] = lambda: True) -> float:
    """Poll ``url``/readyz until it answers 200; return the seconds it took. ``alive`` False stops early."""
    start = time.monotonic()
    deadline = start + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise ServerError(f"the server at {url} stopped before it was ready")
        try:
            response = httpx.get(url + "/readyz", timeout=2)
        except httpx.TransportError:
            response = None
        if response is not None and response.status_code == 200:
            return time.monotonic() - start
        if response is not None and _status(response) == "failed":
            raise ModelLoadError(f"the model failed to load at {url}; the runtime logged why above")
        time.sleep(0.05)
    raise ServerError(f"the server at {url} was not ready after {timeout:.0f}s")


def _uvicorn_log_level() -> str:
    level = logging.getLogger().getEffectiveLevel()
    return "info" if level <= logging.INFO else "warning"


def _config(settings: RuntimeSettings) -> object:
    import uvicorn

    from slm_runtime.app import create_app

    return uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        log_level=_uvicorn_log_level(),
        access_log=False,
        timeout_graceful_shutdown=10,
    )


def serve_foreground(settings: RuntimeSettings, on_ready: Callable[[float], None] | None = None) -> None:
    """Serve until Ctrl-C; ``on_ready(load_seconds)`` runs once the model answers (from a watcher thread)."""
    import uvicorn

    url = f"http://{_client_host(settings.server.host)}:{settings.server.port}"
    server = uvicorn.Server(_config(settings))  # type: ignore[arg-type]

    failures: list[ServerError] = []

    def watch() -> None:
        try:
            seconds = wait_ready(url, timeout=float("inf"), alive=lambda: not server.should_exit)
        except ModelLoadError as exc:
            failures.append(exc)
            server.should_exit = True
            return
        except ServerError:
            return
        if on_ready is not None:
            on_ready(seconds)

    threading.Thread(target=watch, name="slm-ready-watch", daemon=True).start()
    with _signals_end_quietly():
        server.run()
    if failures:
        raise failures[0]
    if not server.started:
        raise ServerError(f"could not listen on {settings.server.host}:{settings.server.port}")


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn re-raises the SIGINT/SIGTERM that stopped it once it has shut down; make that a no-op."""
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _client_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


class BackgroundServer:
    """A runtime on a daemon thread of this process, stopped with ``stop()`` (or when the process ends)."""

    def __init__(self, settings: RuntimeSettings) -> None:
        import uvicorn

        self.settings = settings
        self.url = f"http://{_client_host(settings.server.host)}:{settings.server.port}"
        self._server = uvicorn.Server(_config(settings))  # type: ignore[arg-type]
        self._thread = threading.Thread(target=self._server.run, name="slm-local-server", daemon=True)

    def start(self, *, timeout: float = 600) -> float:
        """Start and wait until the model is loaded; return the seconds that took."""
        self._thread.start()
        try:
            return wait_ready(self.url, timeout=timeout, alive=self._thread.is_alive)
        except ServerError:
            self.stop()
            raise

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
