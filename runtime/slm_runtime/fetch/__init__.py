"""Model fetching: ``pull()`` and ``slm-runtime pull`` (see ``layout`` for the cache layout).

>>> from slm_runtime.fetch import pull
>>> model = pull("ollama://qwen2.5:0.5b", "/models", sha256=None)   # doctest: +SKIP
>>> model.path, model.digest, model.metadata.template                # doctest: +SKIP
"""

from __future__ import annotations

from .api import cached, model_path, pull
from .errors import (
    AuthenticationError,
    CacheFullError,
    DigestMismatchError,
    NotCachedError,
    PullError,
    SourceNotFoundError,
    TransferError,
)
from .lock import LockTimeoutError
from .progress import LogProgress, NullProgress, Progress, ProgressFactory, TerminalProgress, auto_progress
from .result import ModelMetadata, PulledModel
from .settings import FetchSettings, default_dest

__all__ = [
    "AuthenticationError",
    "CacheFullError",
    "DigestMismatchError",
    "FetchSettings",
    "LockTimeoutError",
    "LogProgress",
    "ModelMetadata",
    "NotCachedError",
    "NullProgress",
    "Progress",
    "ProgressFactory",
    "PullError",
    "PulledModel",
    "SourceNotFoundError",
    "TerminalProgress",
    "TransferError",
    "auto_progress",
    "cached",
    "default_dest",
    "model_path",
    "pull",
]
