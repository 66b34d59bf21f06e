"""Typed failures of a pull, each with the process exit code ``slm-runtime pull`` returns for it.

Callers branch on the class, never on the message; the message names the source and the fix. Each class also
names the condition ``reason`` the operator reports when an init container exits with its code
(:func:`reason_for_exit_code`), so the exit-code table lives here only.
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
    "pull_failures",
    "reason_for_exit_code",
]


class PullError(Exception):
    """A pull that cannot complete; ``exit_code`` is what the CLI exits with, ``reason`` the condition reason.

    ``permanent``: retrying the same pull cannot succeed until someone changes the spec, a secret or the volume.
    """

    exit_code = 1
    reason = "ModelPullFailed"
    permanent = False


class SourceNotFoundError(PullError):
    """The server answered 404 (or the local file is missing): the source names nothing."""

    exit_code = 3
    reason = "ModelNotFound"
    permanent = True


class AuthenticationError(PullError):
    """The server answered 401 or 403: a token is missing, wrong, or lacks access."""

    exit_code = 4
    reason = "ModelUnauthorized"
    permanent = True


class DigestMismatchError(PullError):
    """The bytes received do not hash to the expected sha256; nothing was kept."""

    exit_code = 5
    reason = "DigestMismatch"
    permanent = True

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
    reason = "ModelNotCached"


class TransferError(PullError):
    """The network kept failing (connection errors, timeouts, 5xx) until the retries ran out."""

    exit_code = 7
    reason = "ModelDownloadFailed"


class CacheFullError(PullError):
    """The cache volume has less free space than the model needs; nothing was downloaded."""

    exit_code = 8
    reason = "ModelCacheFull"
    permanent = True


def pull_failures(cls: type[PullError] = PullError) -> list[type[PullError]]:
    """Every failure class of a pull, ``cls`` first."""
    return [cls, *(sub for child in cls.__subclasses__() for sub in pull_failures(child))]


def reason_for_exit_code(code: int) -> type[PullError]:
    """The failure class ``slm-runtime pull`` exits with ``code`` for (PullError itself for unknown codes)."""
    return next((cls for cls in pull_failures() if cls.exit_code == code), PullError)
