"""Gateway API keys: who may call, and which models each caller sees.

The keys file (a Secret mounted as YAML) is a list of entries::

    - key: sk-team-a-1234          # the key: a bearer token, or the X-API-Key header's value
      namespaces: [team-a]         # optional: only models in these namespaces (empty or absent: all)
      models: [team-a/assistant]   # optional: only these models, "namespace/name" or a bare name (absent: all)

Without a keys file the gateway is open: every request is served, and its Authorization header goes to the model
unchanged (so a model's own key, spec.server.apiKeySecretRef, keeps working). With one, a request needs a listed
key (else 401), in ``X-API-Key: <key>`` or ``Authorization: Bearer <key>`` (:func:`presented_key`: X-API-Key first,
which is how the ``slm`` CLI sends it through the apiserver's service proxy, which consumes Authorization itself),
sees only the models its key allows (any other is a 404, so names do not leak), and neither header is forwarded.
Keys are kept as SHA-256 digests and looked up by digest.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from slm_gateway.catalog import Model

__all__ = [
    "API_KEY_HEADER",
    "OPEN",
    "SEND_A_KEY",
    "Access",
    "KeyFile",
    "KeyRing",
    "KeysError",
    "bearer_token",
    "load_keys",
    "presented_key",
]

log = logging.getLogger(__name__)

API_KEY_HEADER = "x-api-key"
"""The other header a gateway key may come in (lower case, as ASGI names headers); never forwarded to a model."""
SEND_A_KEY = "send the header 'Authorization: Bearer <key>' or 'X-API-Key: <key>' with a key of the gateway"
"""How a 401 tells the client to present its key."""


class KeysError(ValueError):
    """A keys file that cannot be used; the message names the entry and the fix."""


@dataclass(frozen=True)
class Access:
    """What one caller may see: models in ``namespaces`` (empty: any) and named by ``models`` (empty: any)."""

    namespaces: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()

    def sees(self, model: Model) -> bool:
        if self.namespaces and model.namespace not in self.namespaces:
            return False
        return not self.models or model.id in self.models or model.name in self.models

    def visible(self, models: Iterable[Model]) -> list[Model]:
        return [m for m in models if self.sees(m)]


OPEN = Access()
"""The access of every request when the gateway has no keys."""


def _digest(token: str | bytes) -> bytes:
    return hashlib.sha256(token.encode() if isinstance(token, str) else token).digest()


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None for none or another scheme."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def presented_key(authorization: str | None, api_key: str | None = None) -> str | None:
    """The gateway key a request presents: the ``X-API-Key`` header's value when it has one (the ``slm`` CLI's way
    through the apiserver's service proxy, which strips Authorization; it also lets an OpenAI client send the
    gateway key in ``default_headers`` beside a bearer token meant for someone else), else the bearer token."""
    if api_key is not None:
        return api_key.strip() or None
    return bearer_token(authorization)


@dataclass(frozen=True)
class KeyRing:
    """The configured keys; ``enabled`` is False when the gateway is open."""

    by_digest: Mapping[bytes, Access]
    enabled: bool = True

    def access(self, authorization: str | None, api_key: str | None = None) -> Access | None:
        """The access the request's key grants (from its Authorization and X-API-Key headers, see
        :func:`presented_key`); None when a key is needed and the request has no valid one."""
        if not self.enabled:
            return OPEN
        token = presented_key(authorization, api_key)
        return None if token is None else self.by_digest.get(_digest(token))

    @classmethod
    def open(cls) -> KeyRing:
        return cls({}, enabled=False)

    @classmethod
    def from_entries(cls, entries: Any, source: str = "the keys file") -> KeyRing:
        if not isinstance(entries, list):
            raise KeysError(f"{source} must be a YAML list of {{key, namespaces, models}} entries")
        keys: dict[bytes, Access] = {}
        for index, entry in enumerate(entries):
            where = f"{source}: entry {index}"
            if not isinstance(entry, Mapping) or not isinstance(entry.get("key"), str) or not entry["key"].strip():
                raise KeysError(f"{where} needs a non-empty string 'key'")
            unknown = set(entry) - {"key", "namespaces", "models", "name"}
            if unknown:
                raise KeysError(f"{where} has unknown field(s) {sorted(unknown)}: use key, namespaces, models")
            lists: dict[str, frozenset[str]] = {}
            for name in ("namespaces", "models"):
                value = entry.get(name) or []
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise KeysError(f"{where}: '{name}' must be a list of strings")
                lists[name] = frozenset(value)
            digest = _digest(entry["key"].strip())
            if digest in keys:
                raise KeysError(f"{where} repeats a key listed before: give each key once")
            keys[digest] = Access(lists["namespaces"], lists["models"])
        return cls(keys)


def load_keys(path: Path | None) -> KeyRing:
    """The keys of ``path`` (None: the gateway is open); KeysError when it cannot be used."""
    if path is None:
        return KeyRing.open()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise KeysError(f"cannot read the keys file {path}: {exc}") from exc
    return KeyRing.from_entries(data, str(path))


class KeyFile:
    """The keys of a file, reloaded when it changes (a mounted Secret is updated in place by the kubelet).

    The file's modification time is checked at most every ``check_every`` seconds, on use; a changed file
    that cannot be read is logged and the keys read before stay in force.
    """

    def __init__(self, path: Path | None, *, check_every: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self._path = path
        self._check_every = check_every
        self._clock = clock
        self._stamp = self._mtime()
        self._ring = load_keys(path)
        self._checked = clock()

    def _mtime(self) -> float | None:
        try:
            return None if self._path is None else self._path.stat().st_mtime
        except OSError:
            return None

    @property
    def current(self) -> KeyRing:
        if self._path is not None and self._clock() - self._checked >= self._check_every:
            self._checked = self._clock()
            stamp = self._mtime()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._ring = load_keys(self._path)
                    log.info("reloaded the API keys from %s", self._path)
                except KeysError as exc:
                    log.error("%s; keeping the keys read before", exc)
        return self._ring
