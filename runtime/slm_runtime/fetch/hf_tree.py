"""hf://org/repo/folder/[@revision] sources (a trailing '/'): every file of a Hub folder, e.g. an
onnxruntime-genai model.

The folder is listed with the Hub's tree API (``/api/models/{repo}/tree/{revision}/{folder}?recursive=true``,
following ``Link: rel="next"`` pages); each file is downloaded through its resolve URL into
``<folder>.partial/`` (resumable, verified against the LFS sha256 when the listing gives one), and the
folder is renamed into place once complete. Its digest is the tree digest of ``local.tree_digest``, the same
one a file:// folder gets, so a pin works for both.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from slm_runtime.source import ModelSource

from .context import FetchContext
from .digest import hash_file, is_sha256
from .download import Downloaded, DownloadJob, download, fsync_dir, partial_path
from .errors import DigestMismatchError, PullError, SourceNotFoundError
from .hf import auth_headers, resolve_url
from .http import request
from .layout import safe_parts
from .local import tree_digest

__all__ = ["TreeFile", "fetch_hf_folder", "parse_tree", "tree_url"]

_MAX_PAGES = 100


@dataclass(frozen=True)
class TreeFile:
    path: str  # relative to the repository root
    size: int
    sha256: str | None  # LFS files only


def tree_url(endpoint: str, source: ModelSource) -> str:
    revision = quote(source.revision or "main", safe="")
    folder = quote(source.path.strip("/"))
    return f"{endpoint.rstrip('/')}/api/models/{source.name}/tree/{revision}/{folder}?recursive=true"


def parse_tree(entries: object, source: str) -> list[TreeFile]:
    """The files of one listing page (pure); folders are skipped."""
    if not isinstance(entries, list):
        raise PullError(f"{source}: the Hub's tree listing is not a JSON list")
    files = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("type") != "file":
            continue
        lfs = entry.get("lfs") if isinstance(entry.get("lfs"), dict) else {}
        oid = str(lfs.get("oid", "")) if lfs else ""
        files.append(
            TreeFile(path=str(entry["path"]), size=int(entry.get("size", 0)), sha256=oid if is_sha256(oid) else None)
        )
    return files


def fetch_hf_folder(source: ModelSource, target: Path, ctx: FetchContext) -> Downloaded:
    folder = source.path.strip("/")
    files = _list(source, ctx)
    if not files:
        raise SourceNotFoundError(f"{source.raw}: the folder '{folder}' holds no files at that revision")
    staging = partial_path(target)
    staging.mkdir(parents=True, exist_ok=True)
    headers = auth_headers(ctx)
    entries: list[tuple[str, str]] = []
    for file in files:
        rel = file.path.removeprefix(folder + "/")
        destination = staging.joinpath(*safe_parts(rel))
        digest = _already_there(destination, file)
        if digest is None:
            file_source = ModelSource(
                raw=source.raw, scheme=source.scheme, name=source.name, path=file.path, revision=source.revision
            )
            job = DownloadJob(
                url=resolve_url(ctx.settings.hf_endpoint, file_source),
                target=destination,
                source=f"{source.raw} ({rel})",
                expected_sha256=file.sha256,
                headers=headers,
            )
            digest = download(ctx.client, job, policy=ctx.policy, progress=ctx.progress(rel)).sha256
        entries.append((rel, digest))
    digest = tree_digest(entries)
    if ctx.expected_sha256 and digest != ctx.expected_sha256:
        shutil.rmtree(staging, ignore_errors=True)
        raise DigestMismatchError(source.raw, ctx.expected_sha256, digest)
    if target.exists():
        shutil.rmtree(target)  # a stale or corrupt copy: the record was already found wanting
    os.replace(staging, target)
    fsync_dir(target.parent)
    return Downloaded(path=target, sha256=digest, size=sum(f.size for f in files))


def _list(source: ModelSource, ctx: FetchContext) -> list[TreeFile]:
    url: str | None = tree_url(ctx.settings.hf_endpoint, source)
    files: list[TreeFile] = []
    for _ in range(_MAX_PAGES):
        if url is None:
            return files
        response = request(ctx.client, "GET", url, source=source.raw, policy=ctx.policy, headers=auth_headers(ctx))
        try:
            files.extend(parse_tree(response.json(), source.raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise PullError(f"{source.raw}: unreadable tree listing from {url}: {exc}") from exc
        url = _next_page(response)
    raise PullError(f"{source.raw}: the folder listing has more than {_MAX_PAGES} pages")


def _next_page(response: httpx.Response) -> str | None:
    link = response.links.get("next")
    return str(response.request.url.join(link["url"])) if link and link.get("url") else None


def _already_there(path: Path, file: TreeFile) -> str | None:
    """The digest of a file finished by an earlier, interrupted run, when it still checks out."""
    if not path.is_file() or path.stat().st_size != file.size:
        return None
    digest = hash_file(path).hexdigest()
    return digest if file.sha256 in (None, digest) else None
