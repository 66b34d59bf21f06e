"""Stream one URL into a file, verified and resumable.

- Bytes go to ``<target>.partial`` and are hashed (sha256) as they arrive.
- A dropped connection, a timeout or a 5xx is retried with backoff; the retry asks for the missing tail
  with ``Range: bytes=N-`` (guarded by ``If-Range`` when the server gave a validator) and starts over when
  the server ignores the range. A ``.partial`` left by an earlier, killed run is resumed too, guarded by the
  validator that run saved in ``<target>.partial.validator``, so a file changed on the server in between is
  fetched whole instead of spliced.
- When the body is complete: fsync, compare the digest, then ``os.replace`` onto the target and fsync the
  folder. A mismatch deletes the ``.partial`` and raises DigestMismatchError (after one fresh download when
  the mismatching bytes came partly from an earlier run). Nothing ever appears at the target unverified.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .digest import hash_file
from .errors import CacheFullError, DigestMismatchError, PullError, TransferError
from .http import RETRYABLE_ERRORS, check_status, describe_error
from .progress import NullProgress, Progress, format_bytes
from .retry import RetryPolicy
from .sink import HashingSink

__all__ = ["DownloadJob", "Downloaded", "download", "fsync_dir", "partial_path"]

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIABLE = re.compile(r"^bytes \*/(\d+)$")


@dataclass(frozen=True)
class DownloadJob:
    """What to fetch: ``url`` into ``target``; ``source`` names it in messages."""

    url: str
    target: Path
    source: str
    expected_sha256: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Downloaded:
    path: Path
    sha256: str
    size: int


def partial_path(target: Path) -> Path:
    return target.with_name(target.name + ".partial")


def _validator_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".validator")


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class _State:
    offset: int = 0
    hasher: hashlib._Hash = field(default_factory=hashlib.sha256)
    total: int | None = None
    validator: str | None = None

    def restart(self, partial: Path) -> None:
        partial.write_bytes(b"")
        self.offset, self.hasher, self.validator = 0, hashlib.sha256(), None


class _RangeIgnoredError(Exception):
    """The server answered a range request with bytes from another offset."""


def download(
    client: httpx.Client,
    job: DownloadJob,
    *,
    policy: RetryPolicy,
    progress: Progress | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Downloaded:
    """Fetch ``job`` into ``job.target`` (see the module docstring); returns the verified digest and size."""
    job.target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(job.target)
    reporter = progress or NullProgress()
    state = _State()
    if partial.exists() and partial.stat().st_size > 0:
        state.offset = partial.stat().st_size
        state.hasher = hash_file(partial)
        state.validator = _read_validator(partial)
        log.info("%s: resuming %s at byte %d", job.source, partial.name, state.offset)
    else:
        partial.write_bytes(b"")
        _validator_path(partial).unlink(missing_ok=True)
    from_earlier_run = state.offset > 0
    try:
        while True:
            _transfer_with_retries(client, job, partial, state, policy=policy, reporter=reporter, sleep=sleep)
            actual = state.hasher.hexdigest()
            if job.expected_sha256 is None or actual == job.expected_sha256:
                break
            if from_earlier_run:
                log.warning(
                    "%s: digest mismatch after resuming an earlier partial file; downloading afresh",
                    job.source,
                )
                from_earlier_run = False
                state.restart(partial)
                continue
            partial.unlink(missing_ok=True)
            _validator_path(partial).unlink(missing_ok=True)
            raise DigestMismatchError(job.source, job.expected_sha256, actual)
    finally:
        reporter.close()
    _validator_path(partial).unlink(missing_ok=True)
    os.replace(partial, job.target)
    fsync_dir(job.target.parent)
    return Downloaded(path=job.target, sha256=actual, size=state.offset)


def _transfer_with_retries(
    client: httpx.Client,
    job: DownloadJob,
    partial: Path,
    state: _State,
    *,
    policy: RetryPolicy,
    reporter: Progress,
    sleep: Callable[[float], None],
) -> None:
    failures = 0
    while True:
        before = state.offset
        try:
            _transfer(client, job, partial, state, reporter)
            return
        except _RangeIgnoredError:
            log.warning("%s: the server ignored the resume range; starting over", job.source)
            state.restart(partial)
            continue
        except RETRYABLE_ERRORS as exc:
            if state.offset > before:
                failures = 0  # progress was made: this is a fresh failure, not a repeated one
            failures += 1
            if policy.gives_up_after(failures):
                raise TransferError(
                    f"{job.source}: download failed {failures} times in a row, last: {describe_error(exc)}; "
                    f"{state.offset} bytes kept in {partial} for the next try"
                ) from exc
            delay = policy.delay(failures)
            log.warning(
                "%s: %s at byte %d; retry %d/%d in %.1fs",
                job.source,
                describe_error(exc),
                state.offset,
                failures,
                policy.max_attempts - 1,
                delay,
            )
            sleep(delay)


def _transfer(client: httpx.Client, job: DownloadJob, partial: Path, state: _State, reporter: Progress) -> None:
    headers = {**job.headers, "Accept-Encoding": "identity"}
    if state.offset:
        headers["Range"] = f"bytes={state.offset}-"
        if state.validator:
            headers["If-Range"] = state.validator
    with client.stream("GET", job.url, headers=headers, follow_redirects=True) as response:
        if response.status_code == 416 and state.offset:
            _range_not_satisfiable(response, job, partial, state)
            return
        check_status(response, job.source)
        length = _int_header(response, "content-length")
        if state.offset and response.status_code == 206:
            start, total = _content_range(response)
            if start != state.offset:
                raise _RangeIgnoredError
            state.total = total
        else:
            if state.offset:
                log.info("%s: the server sent the whole file again; starting over", job.source)
                state.restart(partial)
            state.total = length
        if state.total is not None:
            _check_space(partial, state.total - state.offset, job.source)
        validator = _validator(response)
        if validator and validator != state.validator:
            state.validator = validator
            _validator_path(partial).write_text(validator, encoding="utf-8")
        _copy_body(response, partial, state, reporter)
        if state.total is not None and state.offset < state.total:
            raise httpx.RemoteProtocolError(f"body ended at byte {state.offset} of {state.total}")


def _copy_body(response: httpx.Response, partial: Path, state: _State, reporter: Progress) -> None:
    fd = os.open(partial, os.O_WRONLY | os.O_APPEND)
    start = state.offset
    sink = HashingSink(fd, state.hasher)
    try:
        received = start
        reporter.update(received, state.total)
        for block in response.iter_raw():  # as it arrives: nothing is lost when the peer drops
            sink.put(block)
            received += len(block)
            reporter.update(received, state.total)
    finally:
        try:
            sink.close()
        finally:
            state.offset = start + sink.written
            os.fsync(fd)
            os.close(fd)


def _check_space(partial: Path, needed: int, source: str) -> None:
    free = shutil.disk_usage(partial.parent).free
    if needed > free:
        raise CacheFullError(
            f"{source}: needs {format_bytes(needed)} more but only {format_bytes(free)} is free in "
            f"{partial.parent}; make the cache bigger (spec.cache.size) or free space there"
        )


def _range_not_satisfiable(response: httpx.Response, job: DownloadJob, partial: Path, state: _State) -> None:
    """416 to ``bytes=N-``: complete when the file is exactly N bytes long, otherwise start over."""
    match = _UNSATISFIABLE.match(response.headers.get("content-range", ""))
    if match and int(match[1]) == state.offset:
        state.total = state.offset
        return
    log.warning("%s: the partial file does not fit the remote one", job.source)
    raise _RangeIgnoredError


def _content_range(response: httpx.Response) -> tuple[int, int | None]:
    match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
    if not match:
        raise PullError(f"{response.request.url}: 206 without a valid Content-Range header")
    return int(match[1]), None if match[3] == "*" else int(match[3])


def _int_header(response: httpx.Response, name: str) -> int | None:
    value = response.headers.get(name)
    return int(value) if value and value.isdigit() else None


def _read_validator(partial: Path) -> str | None:
    try:
        return _validator_path(partial).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def _validator(response: httpx.Response) -> str | None:
    """A strong ETag, else Last-Modified: what If-Range needs to refuse resuming a changed file."""
    etag = str(response.headers.get("etag", ""))
    if etag and not etag.startswith("W/"):
        return etag
    return str(response.headers.get("last-modified", "")) or None
