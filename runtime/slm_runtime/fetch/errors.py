"""Typed failures of a pull, each with the process exit code ``slm-runtime pull`` returns for it.

Callers branch on the class, never on the message; the message names the source and the fix.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationError",
    "CacheFullError",
    "DigestMismatchError",
    "NotCachedError",
    "PullError",
    "SourceNotFoundError",
    "TransferError",
]


class PullError(Exception):
    """A pull that cannot complete; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class SourceNotFoundError(PullError):
    """The server answered 404 (or the local file is missing): the source names nothing."""

    exit_code = 3


class AuthenticationError(PullError):
    """The server answered 401 or 403: a token is missing, wrong, or lacks access."""

    exit_code = 4


class DigestMismatchError(PullError):
    """The bytes received do not hash to the expected sha256; nothing was kept."""

    exit_code = 5

    def __init__(self, source: str, expected: str, actual: str) -> None:
        self.source = source
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{source}: sha256 mismatch: expected sha256:{expected}, got sha256:{actual}; "
            "the download was discarded (check spec.model.sha256 or the source)"
        )


class NotCachedError(PullError):
    """``--offline`` was asked for and the model is not in the cache."""

    exit_code = 6


class TransferError(PullError):
    """The network kept failing (connection errors, timeouts, 5xx) until the retries ran out."""

    exit_code = 7


class CacheFullError(PullError):
    """The cache volume has less free space than the model needs; nothing was downloaded."""

    exit_code = 8
