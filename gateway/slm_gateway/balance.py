"""Endpoint choice, as pure functions of the endpoints and their in-flight counts.

- :func:`least_loaded`: the endpoint with the fewest requests in flight through this gateway; ties rotate.
- :func:`bounded_affinity`: consistent hashing with bounded loads (CHWBL, Mirrokni et al. 2018, as KubeAI uses
  for prefix affinity): a prompt prefix hashes to a point on a ring of endpoints; the request goes to the first
  endpoint clockwise whose load, counting it, stays within ``ceil(factor * (total + 1) / endpoints)``. Requests
  sharing a prefix therefore reach the same pod (whose prompt cache holds it) until that pod is overloaded, and
  adding or removing a pod moves only the prefixes that hashed next to it.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from functools import lru_cache

__all__ = ["HashRing", "bounded_affinity", "hash_text", "least_loaded", "ring_for"]

VIRTUAL_NODES = 100
"""Points per endpoint on the ring: enough that each endpoint owns a fair share of the hash space."""


def hash_text(text: str) -> int:
    """A stable 64-bit hash (the same in every gateway replica and across restarts)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


def least_loaded(candidates: Sequence[str], load: Mapping[str, int], start: int = 0) -> str:
    """The candidate with the fewest in flight; among equals, the first from ``start`` (rotated by the caller
    so that idle endpoints share the load)."""
    if not candidates:
        raise ValueError("no candidates")
    count = len(candidates)
    offset = min(range(count), key=lambda i: (load.get(candidates[(start + i) % count], 0), i))
    return candidates[(start + offset) % count]


class HashRing:
    """Endpoints placed on a 64-bit ring, :data:`VIRTUAL_NODES` points each."""

    def __init__(self, members: Sequence[str], points: int = VIRTUAL_NODES) -> None:
        self.members = tuple(members)
        ring = sorted((hash_text(f"{member}#{i}"), member) for member in self.members for i in range(points))
        self._hashes = [h for h, _ in ring]
        self._owners = [m for _, m in ring]

    def walk(self, key: int) -> Iterator[str]:
        """Distinct members clockwise from ``key``."""
        if not self._owners:
            return
        seen: set[str] = set()
        start = bisect.bisect_left(self._hashes, key)
        for i in range(len(self._owners)):
            member = self._owners[(start + i) % len(self._owners)]
            if member not in seen:
                seen.add(member)
                yield member
                if len(seen) == len(self.members):
                    return


@lru_cache(maxsize=256)
def ring_for(members: tuple[str, ...]) -> HashRing:
    """The ring of a set of endpoints (cached: it changes only when pods come and go)."""
    return HashRing(members)


def bounded_affinity(ring: HashRing, key: int, load: Mapping[str, int], factor: float) -> str:
    """The first endpoint clockwise from ``key`` that may take one more request (see the module docstring)."""
    if not ring.members:
        raise ValueError("no candidates")
    total = sum(load.get(member, 0) for member in ring.members)
    capacity = math.ceil(factor * (total + 1) / len(ring.members))
    for member in ring.walk(key):
        if load.get(member, 0) + 1 <= capacity:
            return member
    return least_loaded(ring.members, load)  # unreachable for factor >= 1: some member is at most average
