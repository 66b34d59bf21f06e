"""How long the model stays in memory: Ollama's ``keep_alive``.

Requests hold the model while they use it (a streamed answer until its last chunk). When the last holder lets go,
its ``keep_alive`` decides: None (the server's default, and every OpenAI request) keeps the model loaded; a
duration unloads it once that long has passed with no request (0: at once); a negative one keeps it loaded. As in
Ollama, the request that finishes last decides, and a request that arrives meanwhile cancels the unload. An
unloaded model loads again with the next request that needs it (:meth:`ModelService.wait_ready`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

__all__ = ["Residency"]

log = logging.getLogger(__name__)

_FOREVER = 100 * 365 * 24 * 3600.0
"""Longer than this (a century) is forever: no timer is set."""


class Residency:
    """Counts the requests holding the model and unloads it (through ``unload``) when their keep_alive says."""

    def __init__(self, unload: Callable[[], Awaitable[None]], *, honour: bool = True) -> None:
        self._unload = unload
        self.honours = honour
        """False: requests' keep_alive is ignored and the model stays loaded (``server.honour_keep_alive``)."""
        self._holds = 0
        self._timer: asyncio.Task[None] | None = None
        self._expires_at: datetime | None = None

    @property
    def holds(self) -> int:
        return self._holds

    @property
    def expires_at(self) -> datetime | None:
        """When the model will be unloaded; None while it stays."""
        return self._expires_at

    def hold(self) -> None:
        """A request starts using the model: any pending unload is called off."""
        self._holds += 1
        self.cancel()

    def release(self, keep_alive: float | None) -> None:
        """A request is done with the model; if it was the last, unload after ``keep_alive`` seconds (None,
        negative or beyond a century: never)."""
        self._holds -= 1
        if self._holds > 0:
            return
        self.cancel()
        if not self.honours or keep_alive is None or not 0 <= keep_alive <= _FOREVER:
            return
        self._expires_at = datetime.now(UTC) + timedelta(seconds=keep_alive)
        self._timer = asyncio.get_running_loop().create_task(self._expire(keep_alive), name="slm-keep-alive")

    def cancel(self) -> None:
        """Call off a pending unload (a request arrived, or the server is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._expires_at = None

    async def _expire(self, after: float) -> None:
        await asyncio.sleep(after)
        if self._holds == 0:
            self._timer = None
            self._expires_at = None
            try:
                await self._unload()
            except Exception:
                log.exception("unloading the model failed")
