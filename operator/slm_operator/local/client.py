"""A small client of a running runtime's Ollama API (httpx; the CLI needs no SDK).

The server is found like the ``ollama`` CLI finds its own: ``--url`` or $OLLAMA_HOST, default
http://127.0.0.1:11434; a bearer token comes from --api-key or $SLM_API_KEY. slm-gateway, which serves cluster
models, is reached with the subclass in :mod:`slm_operator.local.remote`.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["DEFAULT_URL", "ClientError", "LocalClient", "StreamChunk", "error_text", "server_url", "stream_chunks"]

DEFAULT_URL = "http://127.0.0.1:11434"


def server_url(value: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """``value``, else $OLLAMA_HOST, else the default; 'host:port' and ':port' forms get http://."""
    env = os.environ if environ is None else environ
    raw = (value or env.get("OLLAMA_HOST") or DEFAULT_URL).strip().rstrip("/")
    if raw.startswith(":"):
        raw = "127.0.0.1" + raw
    if "://" not in raw:
        raw = "http://" + raw
    return raw


class ClientError(RuntimeError):
    """The server could not be reached or answered with an error (its message is kept)."""


@dataclass(frozen=True)
class StreamChunk:
    """One NDJSON line of /api/chat or /api/generate: the text so far and, on the last one, the stats."""

    text: str
    done: bool
    stats: dict[str, Any] = field(default_factory=dict)


def error_text(response: httpx.Response) -> str:
    """The message of an error response: Ollama's ``error``, OpenAI's ``error.message``, else the body."""
    try:
        body = response.json()
    except ValueError:
        return response.text or response.reason_phrase
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            return str(error.get("message", error))
        if error:
            return str(error)
    return response.text


class LocalClient:
    """Ollama API calls used by `slm run`, `ps`, `show` and `bench`."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600,
        transport: httpx.BaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
        verify: ssl.SSLContext | bool = True,
        proxy: str | None = None,
    ) -> None:
        sent = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        sent.update(headers or {})
        self.url = url
        self._http = httpx.Client(
            base_url=url,
            headers=sent,
            timeout=httpx.Timeout(timeout, connect=5),
            transport=transport,
            verify=verify,
            proxy=proxy,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> LocalClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}; is `slm serve` running?") from exc
        if response.status_code >= 400:
            raise ClientError(f"{path}: HTTP {response.status_code}: {error_text(response)}")
        return response.json()

    def reachable(self) -> bool:
        try:
            return self._http.get("/api/version", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def ready(self) -> bool:
        try:
            return self._http.get("/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def models(self) -> list[dict[str, Any]]:
        """/api/tags: the models the server offers."""
        return list(self._call("GET", "/api/tags").get("models", []))

    def loaded(self) -> list[dict[str, Any]]:
        """/api/ps: the models the server holds in memory."""
        return list(self._call("GET", "/api/ps").get("models", []))

    def show(self, model: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/api/show", {"model": model})
        return result

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], options: Mapping[str, Any] | None = None
    ) -> Iterator[StreamChunk]:
        """Stream one assistant reply (/api/chat)."""
        body: dict[str, Any] = {"model": model, "messages": list(messages), "stream": True}
        if options:
            body["options"] = dict(options)
        yield from self._stream("/api/chat", body, lambda line: str(line.get("message", {}).get("content", "")))

    def generate(self, model: str, prompt: str, options: Mapping[str, Any] | None = None) -> Iterator[StreamChunk]:
        """Stream one completion (/api/generate)."""
        body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
        if options:
            body["options"] = dict(options)
        yield from self._stream("/api/generate", body, lambda line: str(line.get("response", "")))

    def _stream(
        self, path: str, body: Mapping[str, Any], text_of: Callable[[Mapping[str, Any]], str]
    ) -> Iterator[StreamChunk]:
        try:
            with self._http.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    raise ClientError(f"{path}: HTTP {response.status_code}: {error_text(response)}")
                yield from stream_chunks(path, response, text_of)
        except httpx.TransportError as exc:
            raise ClientError(f"cannot reach {self.url}: {exc}; is `slm serve` running?") from exc


def stream_chunks(
    path: str, response: httpx.Response, text_of: Callable[[Mapping[str, Any]], str]
) -> Iterator[StreamChunk]:
    """The NDJSON lines of a streaming /api/chat or /api/generate answer; an ``error`` line raises ClientError."""
    for raw in response.iter_lines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        if line.get("error"):
            raise ClientError(f"{path}: {line['error']}")
        done = bool(line.get("done"))
        yield StreamChunk(text=text_of(line), done=done, stats=line if done else {})
