"""Watches of our own for the owned kinds and pods: list, then watch, each object turned into its record at once.

kopf decodes every watch event whole, queues the body for a worker of that object, and after a restart holds every
listed object's body until all are indexed: at 1,000 SLMDeployments that is thousands of bodies of 5-55 KiB in
memory at once (a pod event is about 55 KiB of JSON), and the process keeps that high-water mark as resident memory.
A ``Watcher`` reads a list page by page and a watch stream line by line, makes each object's record (compact.py)
as soon as it is decoded and drops the body: what it holds at once is one page or one event. kopf keeps only the
SLMDeployments (their event handler). Pages and events are decoded by decode.py: only the fields the records keep
become Python objects (a pod's spec and every object's managedFields are skipped).

Semantics of a kopf index, no more: the first listing fills the cache (``ready`` is set after it), the watch
continues from the listing's resourceVersion, a watch that expired (410 Gone) or failed lists again and replaces
the cache; a kind the cluster does not serve (404: ServiceMonitor without the Prometheus Operator) is an empty
cache, asked again every ``recheck_seconds``. Missed changes are not a matter of the watch: the resync compares
every SLMDeployment's inputs each period (handlers.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import aiohttp

from slm_operator.controller.cache import Cache, Key, apply_event, split_lines
from slm_operator.controller.decode import Decoded, decode_event, decode_list
from slm_operator.controller.kube import ApiConnection, ApiError, collection_path

__all__ = ["WatchExpiredError", "Watched", "Watcher"]

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Watched(Generic[R]):
    """What to watch and how to keep it: a kind, the label selector the apiserver filters by, and the functions
    that give an object's SLMDeployment key and its record."""

    api_version: str
    kind: str
    plural: str
    selector: str
    key_of: Callable[[Mapping[str, Any]], Key]
    record_of: Callable[[Mapping[str, Any]], R]


class WatchExpiredError(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


# on_change(event type, key, record or None when deleted); "LISTED" for every object of a (re)listing.
OnChange = Callable[[str, Key, Any], None]


class Watcher(Generic[R]):
    """List and watch one kind (of one namespace, or cluster-wide) into ``cache``."""

    def __init__(
        self,
        connection: ApiConnection,
        watched: Watched[R],
        cache: Cache[R],
        *,
        namespace: str | None = None,
        on_change: OnChange | None = None,
        page: int = 100,
        server_timeout: int = 300,
        recheck_seconds: float = 60.0,
    ) -> None:
        self._connection = connection
        self._watched = watched
        self._cache = cache
        self._namespace = namespace
        self._on_change = on_change
        self._page = page
        self._server_timeout = server_timeout
        self._recheck = recheck_seconds
        self._path = collection_path(watched.api_version, watched.plural, namespace)
        self._pod = watched.kind == "Pod"  # a pod's records read only its spec's nodeName
        self.ready = asyncio.Event()  # set once the first listing is in the cache (or the kind is not served)
        self.lists = 0  # listings done (the first, and one after each expired or failed watch)

    async def run(self, session: aiohttp.ClientSession) -> None:
        """List and watch until cancelled; errors are logged and followed by a new listing after a pause."""
        pause = 1.0
        while True:
            try:
                version: str | None = await self._list(session)
                self.ready.set()
                pause = 1.0
                while version is not None:
                    version = await self._watch(session, version)
            except ApiError as exc:
                if exc.status == 404:  # the cluster does not serve this kind (now)
                    self._cache.replace([], within=self._namespace)
                    self.ready.set()
                    await asyncio.sleep(self._recheck)
                    continue
                log.warning("watch of %s: %s; listing again in %.0fs", self._path, exc, pause)
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                log.warning("watch of %s: %r; listing again in %.0fs", self._path, exc, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 30.0)

    def _request_headers(self) -> dict[str, str]:
        # Uncompressed: the apiserver gzips any answer over 128 KiB (a page of pods) and the operator inflates it
        # again, both on CPU that the cluster's network would not need.
        return {**self._connection.headers(), "Accept-Encoding": "identity"}  # the token may have rotated

    async def _get(self, session: aiohttp.ClientSession, params: dict[str, str]) -> tuple[list[Decoded], str, str]:
        """One page: its items, the continue token and the list's resourceVersion."""
        url = self._connection.host + self._path
        async with session.get(url, params=params, headers=self._request_headers()) as reply:
            if reply.status >= 300:
                raise ApiError("GET", self._path, reply.status, await reply.text())
            return decode_list(await reply.read(), pod=self._pod)

    async def _list(self, session: aiohttp.ClientSession) -> str:
        """A full listing, page by page, into the cache; the resourceVersion to watch from."""
        watched = self._watched
        entries = []
        params = {"labelSelector": watched.selector, "limit": str(self._page)}
        began, pages = time.perf_counter(), 0
        while True:
            pages += 1
            items, token, version = await self._get(session, params)
            for item in items:
                # Items of a list carry no kind: the records (and drift comparisons) expect the object's own.
                item["apiVersion"], item["kind"] = watched.api_version, watched.kind
                meta = item.get("metadata") or {}
                ident = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
                entries.append((ident, watched.key_of(item), watched.record_of(item)))
            if not token:
                break
            params["continue"] = token
        self._cache.replace(entries, within=self._namespace)
        self.lists += 1
        log.info("listed %d %s in %.2fs (%d pages)", len(entries), self._path, time.perf_counter() - began, pages)
        if self._on_change is not None:
            for _, key, record in entries:
                self._on_change("LISTED", key, record)
        return version

    async def _watch(self, session: aiohttp.ClientSession, version: str) -> str | None:
        """One watch request from ``version``: the version to continue from when it ends, None to list again."""
        params = {
            "watch": "1",
            "labelSelector": self._watched.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(self._server_timeout),
        }
        url = self._connection.host + self._path
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=self._server_timeout + 30)
        async with session.get(url, params=params, headers=self._request_headers(), timeout=timeout) as reply:
            if reply.status == 410:
                return None
            if reply.status >= 300:
                raise ApiError("GET", self._path, reply.status, await reply.text())
            pending = bytearray()
            async for chunk in reply.content.iter_any():
                for line in split_lines(pending, chunk):
                    try:
                        version = self._event(*decode_event(line, pod=self._pod), version)
                    except WatchExpiredError:
                        return None
        return version

    def _event(self, kind: str, obj: Mapping[str, Any], version: str) -> str:
        """Apply one watch event (its type and object); the resourceVersion to continue from."""
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise WatchExpiredError
            raise ApiError("WATCH", self._path, int(obj.get("code") or 500), str(obj.get("message")))
        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        changed = apply_event(self._cache, (kind, obj), self._watched.key_of, self._watched.record_of)
        if changed is not None and self._on_change is not None:
            self._on_change(kind, *changed)
        return version
