"""A watch cache of one kind (pure): the records of its objects, grouped by the SLMDeployment they belong to.

It answers what a kopf index answered (``cache.get(key, [])``, ``cache.keys()``), so the reconciles read it the same
way, and it is fed by ``watch.Watcher`` one event at a time: an object's body is turned into its record (compact.py)
as soon as it is decoded, and the body is dropped. An object is known by its namespace and name; it moves between
groups when its instance label changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

__all__ = ["Cache", "Event", "apply_event", "split_lines"]

Key = tuple[str, str]  # (namespace, name) of an SLMDeployment
ObjectId = tuple[str, str]  # (namespace, name) of the watched object
R = TypeVar("R")
Event = tuple[str, Mapping[str, Any]]  # (type, object) of one watch event


class Cache(Generic[R]):
    """Records by SLMDeployment key, each group in the order its objects were first seen."""

    def __init__(self) -> None:
        self._groups: dict[Key, dict[ObjectId, R]] = {}
        self._where: dict[ObjectId, Key] = {}

    def get(self, key: Key, default: Iterable[R] = ()) -> list[R]:
        group = self._groups.get(key)
        return list(group.values()) if group else list(default)

    def keys(self) -> Iterator[Key]:
        return iter(list(self._groups))

    def __len__(self) -> int:
        return len(self._where)

    def put(self, ident: ObjectId, key: Key, record: R) -> None:
        """Store (or replace) the record of one object."""
        old = self._where.get(ident)
        if old is not None and old != key:
            self.remove(ident)
        self._groups.setdefault(key, {})[ident] = record
        self._where[ident] = key

    def remove(self, ident: ObjectId) -> Key | None:
        """Forget one object; the key it was grouped under (None: it was not known)."""
        key = self._where.pop(ident, None)
        if key is not None:
            group = self._groups[key]
            group.pop(ident, None)
            if not group:
                del self._groups[key]
        return key

    def replace(self, entries: Iterable[tuple[ObjectId, Key, R]], within: str | None = None) -> None:
        """Exactly these objects from now on (a full listing; of namespace ``within`` only, when given): objects
        not among them are forgotten."""
        for ident in [i for i in self._where if within is None or i[0] == within]:
            self.remove(ident)
        for ident, key, record in entries:
            self.put(ident, key, record)


def apply_event(
    cache: Cache[R],
    event: Event,
    key_of: Callable[[Mapping[str, Any]], Key],
    record_of: Callable[[Mapping[str, Any]], R],
) -> tuple[Key, R | None] | None:
    """Apply one ADDED, MODIFIED or DELETED event: the key it concerns and the record stored (None when the object
    was deleted); None for any other event type (BOOKMARK, ERROR: the watcher reads those)."""
    kind, obj = event
    meta = obj.get("metadata") or {}
    ident = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
    if kind == "DELETED":
        key = cache.remove(ident)
        return (key if key is not None else key_of(obj)), None
    if kind in ("ADDED", "MODIFIED"):
        key, record = key_of(obj), record_of(obj)
        cache.put(ident, key, record)
        return key, record
    return None


def split_lines(pending: bytearray, chunk: bytes) -> list[bytes]:
    """Append ``chunk`` to ``pending`` and take the complete lines out of it (a watch stream is one JSON object per
    line; a line may arrive over several chunks, several lines in one chunk). Empty lines are dropped."""
    pending.extend(chunk)
    end = pending.rfind(b"\n")
    if end < 0:
        return []
    complete = bytes(pending[:end])
    del pending[: end + 1]
    return [line for line in complete.split(b"\n") if line.strip()]
