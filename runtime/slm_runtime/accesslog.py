"""The access log: who called what, when, the status and token counts (prompt text only when enabled)."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLogMiddleware", "AccessRecord", "key_fingerprint", "record_of", "record_of_scope"]

_STATE_KEY = "access_record"

log = logging.getLogger("slm_runtime.access")


@dataclass
class AccessRecord:
    """Filled in by the handlers while a request runs; logged when its response is complete."""

    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_text: str | None = None
    outcome: str = ""


def key_fingerprint(authorization: str) -> str:
    """A short, non-reversible name for the caller's credential ("-" without one)."""
    token = authorization.removeprefix("Bearer ").strip()
    if not token:
        return "-"
    return "key:" + hashlib.sha256(token.encode()).hexdigest()[:8]


def record_of(scope_state: Any) -> AccessRecord:
    """The record of the current request (a throwaway one when the middleware is not installed)."""
    record = getattr(scope_state, _STATE_KEY, None)
    return record if isinstance(record, AccessRecord) else AccessRecord()


def record_of_scope(scope: Scope) -> AccessRecord:
    """:func:`record_of` for ASGI middleware, which sees the scope rather than a request."""
    record = (scope.get("state") or {}).get(_STATE_KEY)
    return record if isinstance(record, AccessRecord) else AccessRecord()


class AccessLogMiddleware:
    def __init__(self, app: ASGIApp, *, log_prompts: bool) -> None:
        self.app = app
        self.log_prompts = log_prompts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record = AccessRecord()
        scope.setdefault("state", {})[_STATE_KEY] = record
        started = time.perf_counter()
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if log.isEnabledFor(logging.INFO):
                self._log(scope, record, status, time.perf_counter() - started)

    def _log(self, scope: Scope, record: AccessRecord, status: int, seconds: float) -> None:
        """One line for the request (built only when the access log is on: a storm of refusals builds none)."""
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        fields: dict[str, Any] = {
            "client": f"{client[0]}:{client[1]}" if client else "-",
            "caller": key_fingerprint(headers.get(b"authorization", b"").decode("latin-1")),
            "method": scope["method"],
            "path": scope["path"],
            "status": status or 499,
            "duration_ms": round(seconds * 1000, 1),
            "model": record.model or "-",
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
        }
        if record.outcome:
            fields["outcome"] = record.outcome
        if self.log_prompts and record.prompt_text is not None:
            fields["prompt"] = record.prompt_text
        log.info(" ".join(f"{k}={v!r}" if k == "prompt" else f"{k}={v}" for k, v in fields.items()))
