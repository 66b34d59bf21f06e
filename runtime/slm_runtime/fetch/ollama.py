"""ollama://[namespace/]name[:tag] sources: the Ollama registry protocol (OCI distribution v2).

1. ``GET {registry}/v2/{namespace}/{name}/manifests/{tag}`` returns a manifest whose layers are blobs
   named by sha256 digest, each with a media type ``application/vnd.ollama.image.<kind>``.
2. The ``model`` layer (the GGUF file) is downloaded from ``/v2/{namespace}/{name}/blobs/{digest}``
   (the registry redirects to a CDN) and verified against its digest.
3. The small ``template``, ``system``, ``params`` and ``license`` layers are fetched, verified and kept as
   the model's metadata (what ``ollama run`` would apply as defaults); the manifest is saved beside the model.
4. A model blob already cached under another tag or name is hard-linked, not downloaded again.
   ``params`` keeps Ollama's own names (``temperature``, ``num_ctx``, ``stop`` ...).

Mirrors that demand a registry token (401 with a Bearer challenge) get one anonymously (registry_auth).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slm_runtime.source import ModelSource

from .context import FetchContext
from .download import Downloaded, DownloadJob, download, partial_path
from .errors import DigestMismatchError, PullError
from .http import check_status, request
from .layout import OLLAMA_MODEL_FILE
from .registry_auth import fetch_token, parse_bearer_challenge
from .result import RECORD_SUFFIX, ModelMetadata, read_record

__all__ = ["MANIFEST_ACCEPT", "Layer", "Manifest", "fetch_ollama", "metadata_from_layers"]

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = "application/vnd.docker.distribution.manifest.v2+json"
MEDIA_PREFIX = "application/vnd.ollama.image."
_METADATA_KINDS = ("template", "system", "params", "license")
_METADATA_LIMIT = 4 << 20  # metadata layers are text; refuse anything bigger


class Layer(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    media_type: str = Field(alias="mediaType")
    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    size: int = Field(ge=0)

    @property
    def kind(self) -> str:
        """'model', 'template', 'system', 'params', 'license', 'projector' ... ('' for foreign types)."""
        return self.media_type.removeprefix(MEDIA_PREFIX) if self.media_type.startswith(MEDIA_PREFIX) else ""

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")


class Manifest(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    schema_version: int = Field(alias="schemaVersion")
    layers: list[Layer]

    def model_layer(self, source: str) -> Layer:
        models = [layer for layer in self.layers if layer.kind == "model"]
        if len(models) != 1:
            raise PullError(f"{source}: the manifest has {len(models)} model layers; expected exactly one")
        return models[0]


def metadata_from_layers(texts: dict[str, list[str]]) -> ModelMetadata:
    """Metadata from the decoded text of each kind of layer (pure); several license layers are joined."""
    params: dict[str, Any] = {}
    for text in texts.get("params", []):
        loaded = json.loads(text)
        if isinstance(loaded, dict):
            params.update(loaded)
    licenses = texts.get("license", [])
    return ModelMetadata(
        template=_last(texts, "template"),
        system=_last(texts, "system"),
        parameters=params,
        license="\n\n".join(licenses) if licenses else None,
    )


def _last(texts: dict[str, list[str]], kind: str) -> str | None:
    values = texts.get(kind)
    return values[-1] if values else None


def fetch_ollama(source: ModelSource, target: Path, ctx: FetchContext) -> tuple[Downloaded, ModelMetadata]:
    base = f"{ctx.settings.ollama_registry.rstrip('/')}/v2/{source.namespace}/{source.name}"
    auth, response = _manifest(f"{base}/manifests/{source.tag}", source, ctx)
    try:
        manifest = Manifest.model_validate_json(response.content)
    except ValidationError as exc:
        raise PullError(f"{source.raw}: the registry sent a manifest this puller cannot read: {exc}") from exc
    model = manifest.model_layer(source.raw)
    if ctx.expected_sha256 and ctx.expected_sha256 != model.sha256:
        raise DigestMismatchError(source.raw, ctx.expected_sha256, model.sha256)
    skipped = sorted({layer.kind or layer.media_type for layer in manifest.layers} - {"model", *_METADATA_KINDS})
    if skipped:
        log.warning("%s: layers not used by slm-runtime were skipped: %s", source.raw, ", ".join(skipped))
    texts: dict[str, list[str]] = {}
    for layer in manifest.layers:
        if layer.kind in _METADATA_KINDS:
            text = _small_blob(f"{base}/blobs/{layer.digest}", layer, source, ctx, auth)
            texts.setdefault(layer.kind, []).append(text)
    try:
        metadata = metadata_from_layers(texts)
    except json.JSONDecodeError as exc:
        raise PullError(f"{source.raw}: the params layer is not JSON: {exc}") from exc
    reused = _reuse_blob(target, model)
    if reused is not None:
        _write_manifest(target.with_name("manifest.json"), response.content)
        return reused, metadata
    job = DownloadJob(
        url=f"{base}/blobs/{model.digest}",
        target=target,
        source=source.raw,
        expected_sha256=model.sha256,
        headers=auth,
    )
    downloaded = download(ctx.client, job, policy=ctx.policy, progress=ctx.progress(f"{source.name}:{source.tag}"))
    _write_manifest(target.with_name("manifest.json"), response.content)
    return downloaded, metadata


def _manifest(url: str, source: ModelSource, ctx: FetchContext) -> tuple[dict[str, str], httpx.Response]:
    """The manifest response and the auth headers it took: none, or a registry token (see registry_auth)."""
    headers = {"Accept": MANIFEST_ACCEPT}
    response = request(ctx.client, "GET", url, source=source.raw, policy=ctx.policy, headers=headers, accept={401})
    if response.status_code != 401:
        return {}, response
    challenge = parse_bearer_challenge(response.headers.get("www-authenticate", ""))
    if challenge is None:
        check_status(response, source.raw)  # raises AuthenticationError
    assert challenge is not None
    token = fetch_token(ctx.client, challenge, source=source.raw, policy=ctx.policy)
    auth = {"Authorization": f"Bearer {token}"}
    response = request(ctx.client, "GET", url, source=source.raw, policy=ctx.policy, headers={**headers, **auth})
    return auth, response


def _reuse_blob(target: Path, model: Layer) -> Downloaded | None:
    """Hard-link the same blob from another cached tag (e.g. ``:latest`` and ``:3b``) instead of downloading.

    Cached files are never written in place (only replaced by rename), so sharing an inode is safe.
    """
    for record_file in target.parents[3].glob(f"*/*/*/{OLLAMA_MODEL_FILE}{RECORD_SUFFIX}"):
        record = read_record(record_file)
        other = record_file.with_name(OLLAMA_MODEL_FILE)
        if record is None or record.sha256 != model.sha256 or other == target:
            continue
        try:
            if other.stat().st_size != model.size:
                continue
            partial = partial_path(target)
            partial.unlink(missing_ok=True)
            os.link(other, partial)
            os.replace(partial, target)
        except OSError as exc:  # gone meanwhile, or a filesystem without hard links: download instead
            log.info("%s: cannot reuse %s (%s)", model.digest, other, exc)
            continue
        log.info("%s: reusing the blob already cached at %s", model.digest, other)
        return Downloaded(path=target, sha256=model.sha256, size=model.size)
    return None


def _small_blob(url: str, layer: Layer, source: ModelSource, ctx: FetchContext, auth: dict[str, str]) -> str:
    if layer.size > _METADATA_LIMIT:
        raise PullError(f"{source.raw}: the {layer.kind} layer is {layer.size} bytes; metadata layers must be small")
    body = request(ctx.client, "GET", url, source=source.raw, policy=ctx.policy, headers=auth).content
    actual = hashlib.sha256(body).hexdigest()
    if actual != layer.sha256:
        raise DigestMismatchError(f"{source.raw} ({layer.kind} layer)", layer.sha256, actual)
    return body.decode("utf-8")


def _write_manifest(path: Path, content: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
