"""Test helpers for the fetcher: a local HTTP/1.1 server with Range support, redirects, bearer tokens and
one-shot faults per path, on which the tests lay out plain files, the Ollama registry and the Hugging Face
Hub (with its CDN redirect): no internet needed."""

from __future__ import annotations

import hashlib
import random
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from slm_runtime.fetch import NullProgress, Progress

_RANGE = re.compile(r"^bytes=(\d+)-$")


@dataclass
class Fault:
    """One-shot misbehaviour for the next request of a path."""

    kind: str  # "drop" (close after `after` bytes), "stall" (wait `seconds` before the body), "status", "full"
    after: int = 0
    seconds: float = 0.0
    status: int = 500


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    redirect: str | None = None  # Location for a 302/307
    redirect_status: int = 302
    token: str | None = None  # required Bearer token
    challenge: str | None = None  # WWW-Authenticate sent with the 401
    corrupt: bool = False  # flip one byte in the middle of every body
    slow: float = 0.0  # seconds to sleep between 64 KiB writes
    etag: str | None = None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up (timeouts, dropped transfers) are part of the tests, not errors."""


class FakeServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 serving ``routes`` (path -> Route)."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.faults: dict[str, list[Fault]] = {}
        self.seen: list[Seen] = []
        self.head_status: int | None = None  # answer every HEAD with this status (mirrors without HEAD)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), _handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def netloc(self) -> str:
        return self.url.removeprefix("http://")

    def add(self, path: str, body: bytes = b"", **options: object) -> Route:
        route = Route(body=body, **options)  # type: ignore[arg-type]
        self.routes[path] = route
        return route

    def fault(self, path: str, *faults: Fault) -> None:
        self.faults.setdefault(path, []).extend(faults)

    def gets(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.method == "GET" and s.path.split("?")[0] == path]

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self.faults.get(path)
            return queue.pop(0) if queue else None

    def close(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()


def _handler(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            if server.head_status is not None:
                server.record(Seen("HEAD", self.path, {k.lower(): v for k, v in self.headers.items()}))
                self._status(server.head_status)
                return
            self._serve(head=True)

        def do_GET(self) -> None:
            self._serve(head=False)

        def _serve(self, *, head: bool) -> None:
            path = self.path.split("?")[0]
            server.record(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            route = server.routes.get(path)
            if route is None:
                return self._status(404)
            if route.token is not None and self.headers.get("Authorization") != f"Bearer {route.token}":
                return self._status(401, route.challenge)
            fault = server.next_fault(path) if not head else None
            if fault is not None and fault.kind == "status":
                return self._status(fault.status)
            if route.redirect is not None:
                self.send_response(route.redirect_status)
                self.send_header("Location", route.redirect)
                self.send_header("Content-Length", "0")
                for name, value in route.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                return None
            if route.status != 200:
                return self._status(route.status)
            body = route.body
            if route.corrupt and body:
                middle = len(body) // 2
                body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
            start = 0
            match = _RANGE.match(self.headers.get("Range", ""))
            if_range = self.headers.get("If-Range")
            honour = match is not None and (fault is None or fault.kind != "full")
            if honour and if_range is not None and route.etag is not None and if_range != route.etag:
                honour = False
            if honour and match is not None:
                start = int(match[1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
                self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body) - start))
            if route.etag:
                self.send_header("ETag", route.etag)
            for name, value in route.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return None
            payload = body[start:]
            if fault is not None and fault.kind == "stall":
                server.stopping.wait(fault.seconds)
            if fault is not None and fault.kind == "drop":
                self.wfile.write(payload[: fault.after])
                self.wfile.flush()
                self.close_connection = True
                return None
            try:
                self._write(payload, route.slow)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True
            return None

        def _write(self, payload: bytes, slow: float) -> None:
            if not slow:
                self.wfile.write(payload)
                return
            step = 64 * 1024
            for offset in range(0, len(payload), step):
                self.wfile.write(payload[offset : offset + step])
                server.stopping.wait(slow)

        def _status(self, code: int, challenge: str | None = None) -> None:
            body = b'{"errors":[{"code":"ERROR","message":"fake"}]}'
            self.send_response(code)
            if challenge:
                self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler


def model_bytes(size: int = 3 * 1024 * 1024 + 123, seed: int = 1) -> bytes:
    """A fake GGUF file: the magic, then reproducible pseudo-random bytes."""
    rng = random.Random(seed)
    return b"GGUF" + rng.randbytes(size - 4)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def quiet(_: str) -> Progress:
    return NullProgress()
