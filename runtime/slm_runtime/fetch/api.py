"""``pull()``: bring one model source into the cache, once, verified, and say where it is.

The order for a remote source: the cache record is checked first (a hit needs no network), ``offline``
stops there, then the per-model lock is taken, the cache checked again (another replica may have just
finished), and only then is the source fetched. file:// and pvc:// models (and files inside packages) are
used in place and only hashed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import httpx

from slm_runtime.source import ModelSource, SourceScheme, infer_format, parse_source

from .context import FetchContext
from .digest import normalize_sha256
from .download import Downloaded
from .errors import NotCachedError
from .hf import fetch_hf
from .hf_tree import fetch_hf_folder
from .http import make_client, retry_policy
from .layout import cache_path, lock_path, package_path
from .local import hash_in_place, locate, verify_in_place
from .lock import FileLock
from .ollama import fetch_ollama
from .package import PackagePlan, build_from_package, plan_package
from .progress import ProgressFactory, auto_progress
from .result import ModelMetadata, PulledModel, read_record, record_path, write_record
from .settings import FetchSettings
from .web import fetch_web

__all__ = ["cached", "model_path", "pull"]

log = logging.getLogger(__name__)

_GGUF_MAGIC = b"GGUF"


def pull(
    source: str | ModelSource,
    dest: str | Path,
    *,
    sha256: str | None = None,
    offline: bool = False,
    verify: bool = False,
    progress: ProgressFactory | None = None,
    settings: FetchSettings | None = None,
    client: httpx.Client | None = None,
) -> PulledModel:
    """Make ``source`` present and verified under ``dest``; return where it is and what it is.

    ``sha256``: the expected digest (hex or 'sha256:hex'); a mismatch raises DigestMismatchError.
    ``offline``: never touch the network; raise NotCachedError when the model is not cached.
    ``verify``: re-hash a cached model instead of trusting its record (a corrupt file is pulled again).
    ``progress``: label -> reporter; defaults to a bar on a TTY and log lines otherwise.
    ``settings``: endpoints, credentials, timeouts; defaults to ``FetchSettings.from_env()``.
    ``client``: an httpx.Client to reuse; one is made from the settings otherwise.
    Raises SourceError (bad URI), ValueError (bad sha256) or a PullError subclass.
    """
    src = parse_source(source) if isinstance(source, str) else source
    expected = normalize_sha256(sha256) if sha256 else None
    settings = settings or FetchSettings.from_env()
    progress = progress or auto_progress
    root = Path(dest).absolute()

    plan = plan_package(src) if src.scheme is SourceScheme.PACKAGE else None
    in_place = _in_place_path(src, plan, settings)
    if in_place is not None:
        return _pull_in_place(src, in_place, _target(src, root, plan), expected, progress)

    target = _target(src, root, plan)
    hit = _cached(src, target, expected, verify=verify)
    if hit is not None:
        return hit
    if offline:
        raise NotCachedError(_not_cached_message(src, target, expected))
    with FileLock(lock_path(target), timeout=settings.lock_timeout):
        hit = _cached(src, target, expected, verify=verify)
        if hit is not None:
            return hit
        # readers that skip the lock must never pair a stale record with the new file
        record_path(target).unlink(missing_ok=True)
        log.info("%s: pulling into %s", src.raw, target)
        metadata = ModelMetadata()
        if plan is not None:
            done = build_from_package(plan, target, src.raw, expected, progress(plan.filename))
        else:
            own_client = client is None
            http = client or make_client(settings)
            try:
                ctx = FetchContext(http, settings, retry_policy(settings), progress, expected)
                done, metadata = _fetch_remote(src, target, ctx)
            finally:
                if own_client:
                    http.close()
        model = _result(src, done, metadata)
        write_record(record_path(target), model)
    log.info("%s: ready at %s (%s, %d bytes)", src.raw, model.path, model.digest, model.size_bytes)
    return model


def cached(
    source: str | ModelSource,
    dest: str | Path,
    *,
    sha256: str | None = None,
    verify: bool = False,
    settings: FetchSettings | None = None,
) -> PulledModel | None:
    """What the last ``pull`` of ``source`` into ``dest`` recorded, if it still holds; never touches the network.

    This is how ``slm-runtime serve`` finds the model the init container pulled: the path, digest, format
    and metadata. A hit needs the record (``<file>.slm.json``), the model file or folder with the recorded
    size, and the pin (when given) equal to the recorded digest; ``verify`` also re-hashes the model.
    For file:// and pvc:// sources the record is the one ``pull`` wrote after hashing the file in place.
    """
    src = parse_source(source) if isinstance(source, str) else source
    expected = normalize_sha256(sha256) if sha256 else None
    plan = plan_package(src) if src.scheme is SourceScheme.PACKAGE else None
    record_at = _target(src, Path(dest).absolute(), plan)
    model_at = _in_place_path(src, plan, settings or FetchSettings.from_env()) or record_at
    return _cached(src, record_at, expected, verify=verify, model_at=model_at)


def _cached(
    src: ModelSource, target: Path, expected: str | None, *, verify: bool, model_at: Path | None = None
) -> PulledModel | None:
    """The record kept at ``target`` when it matches the model at ``model_at`` (default: ``target``)."""
    model_at = model_at or target
    record = read_record(record_path(target))
    if record is None or not model_at.exists():
        return None
    if _size(model_at) != record.size_bytes:
        log.warning("%s: %s has the wrong size for its record; pulling again", src.raw, model_at)
        return None
    if expected and record.sha256 != expected:
        log.info("%s: cached digest %s differs from the pin sha256:%s", src.raw, record.digest, expected)
        return None
    if verify and hash_in_place(model_at)[0] != record.sha256:
        log.warning("%s: %s no longer matches %s; pulling again", src.raw, model_at, record.digest)
        return None
    log.info("%s: cached at %s (%s)", src.raw, model_at, record.digest)
    return record.model_copy(update={"cached": True, "source": src.raw, "path": str(model_at)})


def model_path(source: str | ModelSource, dest: str | Path, settings: FetchSettings | None = None) -> Path:
    """Where ``pull`` puts (or, for file:// and pvc://, finds) the model of ``source``; no network."""
    src = parse_source(source) if isinstance(source, str) else source
    plan = plan_package(src) if src.scheme is SourceScheme.PACKAGE else None
    in_place = _in_place_path(src, plan, settings or FetchSettings.from_env())
    return in_place or _target(src, Path(dest).absolute(), plan)


def _size(path: Path) -> int:
    """A file's size, or the total size of the files in a folder."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _in_place_path(src: ModelSource, plan: PackagePlan | None, settings: FetchSettings) -> Path | None:
    if src.scheme in (SourceScheme.FILE, SourceScheme.PVC):
        return locate(src, settings)
    return plan.in_place if plan is not None else None


def _target(src: ModelSource, root: Path, plan: PackagePlan | None) -> Path:
    if plan is not None:
        return package_path(root, plan.distribution, plan.version, plan.filename)
    return cache_path(src, root)


def _pull_in_place(
    src: ModelSource, path: Path, record_at: Path, expected: str | None, progress: ProgressFactory
) -> PulledModel:
    digest, size = verify_in_place(path, src, expected, progress(path.name))
    model = PulledModel(
        path=str(path), source=src.raw, digest=f"sha256:{digest}", size_bytes=size, format=_format(src, path)
    )
    write_record(record_path(record_at), model)
    log.info("%s: verified in place at %s (%s)", src.raw, path, model.digest)
    return model


def _fetch_remote(src: ModelSource, target: Path, ctx: FetchContext) -> tuple[Downloaded, ModelMetadata]:
    if src.scheme is SourceScheme.OLLAMA:
        return fetch_ollama(src, target, ctx)
    if src.scheme is SourceScheme.HF and src.path.endswith("/"):
        return fetch_hf_folder(src, target, ctx), ModelMetadata()
    if src.scheme is SourceScheme.HF:
        return fetch_hf(src, target, ctx), ModelMetadata()
    return fetch_web(src, target, ctx), ModelMetadata()


def _result(src: ModelSource, done: Downloaded, metadata: ModelMetadata) -> PulledModel:
    return PulledModel(
        path=str(done.path),
        source=src.raw,
        digest=f"sha256:{done.sha256}",
        size_bytes=done.size,
        format=_format(src, done.path),
        metadata=metadata,
    )


def _format(src: ModelSource, path: Path) -> str | None:
    """From the source when it tells, else from the file: GGUF magic, a folder with genai_config.json."""
    known = infer_format(src)
    if known:
        return known
    if path.is_dir():
        return "onnx" if (path / "genai_config.json").exists() else None
    if path.suffix.lower() == ".onnx":
        return "onnx"
    with path.open("rb") as head:
        return "gguf" if head.read(4) == _GGUF_MAGIC else None


def _not_cached_message(src: ModelSource, target: Path, expected: str | None) -> str:
    record = read_record(record_path(target))
    if record is not None and expected and record.sha256 != expected:
        return (
            f"{src.raw}: offline, and the cached copy at {target} has {record.digest}, not the pinned "
            f"sha256:{expected}; pull it once with network access or fix spec.model.sha256"
        )
    return (
        f"{src.raw}: offline and not cached at {target}; pull it once with network access "
        "(or copy it there and run without --offline once to record it), or point a mirror at it"
    )
