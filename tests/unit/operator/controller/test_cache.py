"""The operator's own watch caches (controller/cache.py) and how a watcher applies events (controller/watch.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from slm_operator.controller.cache import Cache, apply_event, split_lines
from slm_operator.controller.kube import ApiError
from slm_operator.controller.watch import Watched, Watcher, WatchExpiredError


def obj(name: str, instance: str, version: str = "1", namespace: str = "ns") -> dict[str, Any]:
    labels = {"app.kubernetes.io/instance": instance}
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels, "resourceVersion": version}}


def key_of(o: Mapping[str, Any]) -> tuple[str, str]:
    return (o["metadata"]["namespace"], o["metadata"]["labels"]["app.kubernetes.io/instance"])


def record_of(o: Mapping[str, Any]) -> str:
    return f"{o['metadata']['name']}@{o['metadata']['resourceVersion']}"


def test_events_add_replace_move_and_delete_records() -> None:
    cache: Cache[str] = Cache()
    assert apply_event(cache, ("ADDED", obj("a", "m1")), key_of, record_of) == (("ns", "m1"), "a@1")
    apply_event(cache, ("ADDED", obj("b", "m1")), key_of, record_of)
    apply_event(cache, ("MODIFIED", obj("a", "m1", "2")), key_of, record_of)
    assert cache.get(("ns", "m1")) == ["a@2", "b@1"]
    # a label change moves the object to the other SLMDeployment's group
    apply_event(cache, ("MODIFIED", obj("b", "m2", "3")), key_of, record_of)
    assert cache.get(("ns", "m1")) == ["a@2"] and cache.get(("ns", "m2")) == ["b@3"]
    assert apply_event(cache, ("DELETED", obj("a", "m1", "4")), key_of, record_of) == (("ns", "m1"), None)
    assert cache.get(("ns", "m1")) == [] and sorted(cache.keys()) == [("ns", "m2")] and len(cache) == 1
    assert apply_event(cache, ("BOOKMARK", obj("b", "m2", "9")), key_of, record_of) is None


def test_a_listing_replaces_everything_or_one_namespace() -> None:
    cache: Cache[str] = Cache()
    for o in (obj("a", "m1"), obj("b", "m1", namespace="other")):
        apply_event(cache, ("ADDED", o), key_of, record_of)
    cache.replace([(("ns", "c"), ("ns", "m3"), "c@5")], within="ns")
    assert sorted(cache.keys()) == [("ns", "m3"), ("other", "m1")]
    cache.replace([])
    assert list(cache.keys()) == [] and cache.get(("ns", "m3"), ["x"]) == ["x"]


def test_split_lines_joins_chunks_and_keeps_the_rest() -> None:
    pending = bytearray()
    assert split_lines(pending, b'{"a":') == []
    assert split_lines(pending, b'1}\n{"b":2}\n\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert split_lines(pending, b":3}\n") == [b'{"c":3}'] and pending == b""


def watcher(cache: Cache[str], seen: list[tuple[str, Any, Any]]) -> Watcher[str]:
    watched = Watched("v1", "Service", "services", "x=y", key_of, record_of)
    return Watcher(None, watched, cache, on_change=lambda *e: seen.append(e))  # type: ignore[arg-type]


def test_watch_events_reach_the_cache_and_the_callback_and_410_means_list_again() -> None:
    async def scenario() -> None:
        cache: Cache[str] = Cache()
        seen: list[tuple[str, Any, Any]] = []
        w = watcher(cache, seen)
        assert w._event("ADDED", obj("a", "m1", "7"), "5") == "7"
        assert w._event("BOOKMARK", {"metadata": {"resourceVersion": "9"}}, "7") == "9"
        assert seen == [("ADDED", ("ns", "m1"), "a@7")] and cache.get(("ns", "m1")) == ["a@7"]
        with pytest.raises(WatchExpiredError):
            w._event("ERROR", {"kind": "Status", "code": 410}, "9")
        with pytest.raises(ApiError):
            w._event("ERROR", {"kind": "Status", "code": 500, "message": "boom"}, "9")

    asyncio.run(scenario())
