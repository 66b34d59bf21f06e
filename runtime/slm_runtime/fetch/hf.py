"""hf://org/repo/path[@revision] sources: the Hugging Face Hub's resolve URLs (or a mirror's, HF_ENDPOINT).

A HEAD request without following redirects reads what the Hub says about the file, as huggingface_hub
does: for LFS files the 302 carries ``X-Linked-Etag`` (the file's sha256) and ``X-Linked-Size``, so the
download is verified even without a pin. The GET then follows the redirect to the CDN; httpx drops the
Authorization header (HF_TOKEN) on the cross-origin hop, so the token never leaves the Hub.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from slm_runtime.source import ModelSource

from .context import FetchContext
from .digest import is_sha256
from .download import Downloaded, DownloadJob, download
from .errors import DigestMismatchError, PullError
from .http import request

__all__ = ["auth_headers", "fetch_hf", "linked_sha256", "resolve_url"]

log = logging.getLogger(__name__)

_MAX_RELATIVE_REDIRECTS = 5
_NO_HEAD = frozenset({405, 501})  # mirrors that serve files but not HEAD


def resolve_url(endpoint: str, source: ModelSource) -> str:
    """``{endpoint}/{org}/{repo}/resolve/{revision}/{path}``, revision defaulting to main."""
    revision = quote(source.revision or "main", safe="")
    return f"{endpoint.rstrip('/')}/{source.name}/resolve/{revision}/{quote(source.path)}"


def linked_sha256(etag: str | None) -> str | None:
    """The sha256 in an ``X-Linked-Etag`` header (LFS files), None for git blob ETags or none."""
    if not etag:
        return None
    value = etag.removeprefix("W/").strip('"').lower()
    return value if is_sha256(value) else None


def auth_headers(ctx: FetchContext) -> dict[str, str]:
    """``Authorization: Bearer $HF_TOKEN`` when a token is configured."""
    if ctx.settings.hf_token is None:
        return {}
    return {"Authorization": f"Bearer {ctx.settings.hf_token.get_secret_value()}"}


def fetch_hf(source: ModelSource, target: Path, ctx: FetchContext) -> Downloaded:
    url = resolve_url(ctx.settings.hf_endpoint, source)
    headers = auth_headers(ctx)
    announced = _head_sha256(url, source, headers, ctx)
    expected = ctx.expected_sha256
    if expected and announced and expected != announced:
        raise DigestMismatchError(source.raw, expected, announced)
    job = DownloadJob(url=url, target=target, source=source.raw, expected_sha256=expected or announced, headers=headers)
    return download(ctx.client, job, policy=ctx.policy, progress=ctx.progress(source.basename))


def _head_sha256(url: str, source: ModelSource, headers: dict[str, str], ctx: FetchContext) -> str | None:
    """The sha256 the Hub announces, following only same-host (relative) redirects such as repo renames."""
    for _ in range(_MAX_RELATIVE_REDIRECTS):
        response = request(
            ctx.client,
            "HEAD",
            url,
            source=source.raw,
            policy=ctx.policy,
            headers=headers,
            follow_redirects=False,
            accept=_NO_HEAD,
        )
        if response.status_code in _NO_HEAD:
            log.info("%s: the endpoint does not answer HEAD; the digest is checked against the pin only", source.raw)
            return None
        announced = linked_sha256(response.headers.get("x-linked-etag"))
        if announced or not response.is_redirect:
            if commit := response.headers.get("x-repo-commit"):
                log.info("%s: revision %s is commit %s", source.raw, source.revision or "main", commit)
            return announced
        location = response.headers.get("location", "")
        if "://" in location:
            return None
        url = str(response.request.url.join(location))
    raise PullError(f"{source.raw}: more than {_MAX_RELATIVE_REDIRECTS} redirects from {url}")
