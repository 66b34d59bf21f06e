"""How `slm-runtime serve` stops: a graceful drain on SIGTERM, and an exit code a pod's status can name.

On SIGTERM (a rollout or scale-down; the pod's preStop delay has already let Services drop the endpoint) the
server turns not-ready, admits nothing new, lets the requests in flight finish within
``ServerSettings.drain_timeout``, then exits 0. A model that cannot load ends the process with
``MODEL_LOAD_FAILED``'s exit code and its reason written to ``ServerSettings.termination_log`` (the pod's
/dev/termination-log), so the kubelet reports why instead of a crash-looping "not ready". The operator maps the
exit codes to condition reasons with :func:`failure_for_exit_code` (pull failures have their own classes in
:mod:`slm_runtime.fetch.errors`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "INVALID_SETTINGS",
    "MODEL_LOAD_FAILED",
    "SERVE_FAILURES",
    "ServeFailure",
    "Shutdown",
    "failure_for_exit_code",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeFailure:
    """Why `serve` exited: its exit code, the condition reason the operator reports, and whether restarting the
    same pod can help (``permanent``: not until the spec or the model changes)."""

    exit_code: int
    reason: str
    permanent: bool


INVALID_SETTINGS = ServeFailure(2, "InvalidRuntimeSettings", permanent=True)
MODEL_LOAD_FAILED = ServeFailure(3, "ModelLoadFailed", permanent=True)
SERVE_FAILURES = (INVALID_SETTINGS, MODEL_LOAD_FAILED)


def failure_for_exit_code(code: int) -> ServeFailure | None:
    """The failure `serve` exits with ``code`` for; None for other codes (a kill, an out-of-memory ...)."""
    return next((failure for failure in SERVE_FAILURES if failure.exit_code == code), None)


class Shutdown:
    """The stop state shared by the HTTP server loop and the model service."""

    def __init__(self, termination_log: Path | None = None) -> None:
        self.termination_log = termination_log
        self.draining = False
        self.failure: ServeFailure | None = None
        self._stop_server: Callable[[], None] | None = None

    def on_stop(self, stop_server: Callable[[], None]) -> None:
        """What ends the server loop (set by `serve`; without it a failure only marks the process unhealthy)."""
        self._stop_server = stop_server

    def drain(self) -> None:
        """SIGTERM: from now on the service is not ready and admits nothing new."""
        if not self.draining:
            log.info("stopping: not ready, admitting no new requests, finishing those in flight")
        self.draining = True

    def fail(self, failure: ServeFailure, message: str) -> None:
        """End the process with ``failure``'s exit code, leaving ``message`` in the termination log."""
        self.failure = failure
        self.draining = True
        if self.termination_log is not None:
            try:
                self.termination_log.write_text(f"{failure.reason}: {message}"[:4096], encoding="utf-8")
            except OSError as exc:
                log.warning("cannot write the termination log %s: %s", self.termination_log, exc)
        if self._stop_server is not None:
            self._stop_server()

    @property
    def exit_code(self) -> int:
        return self.failure.exit_code if self.failure else 0
