"""https:// and http:// sources: one GET (redirects followed), optional Authorization from the environment."""

from __future__ import annotations

from pathlib import Path

from slm_runtime.source import ModelSource

from .context import FetchContext
from .download import Downloaded, DownloadJob, download

__all__ = ["fetch_web"]


def fetch_web(source: ModelSource, target: Path, ctx: FetchContext) -> Downloaded:
    """Download ``source.raw`` into ``target``, verified against the pin when there is one."""
    headers: dict[str, str] = {}
    if ctx.settings.http_authorization is not None:
        headers["Authorization"] = ctx.settings.http_authorization.get_secret_value()
    job = DownloadJob(
        url=source.raw, target=target, source=source.raw, expected_sha256=ctx.expected_sha256, headers=headers
    )
    return download(ctx.client, job, policy=ctx.policy, progress=ctx.progress(source.basename))
