"""What every scheme's fetcher is handed: the HTTP client, settings, retry policy, progress and the pin."""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from .progress import ProgressFactory
from .retry import RetryPolicy
from .settings import FetchSettings

__all__ = ["FetchContext"]


@dataclass(frozen=True)
class FetchContext:
    client: httpx.Client
    settings: FetchSettings
    policy: RetryPolicy
    progress: ProgressFactory
    expected_sha256: str | None = None  # the user's pin (hex), when given
