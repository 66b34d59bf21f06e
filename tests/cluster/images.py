"""Tiny local images for the real test node, built from Go sources in hack/cluster/images/ and cached.

No registry is reachable from the test machine, so the pod sandbox ("pause") image and the smoke-test
workload are static Go programs packed here into ``FROM scratch`` OCI image archives (an OCI image layout in
a tar file, which ``ctr images import`` reads). The archives are cached under
``$SLM_CACHE_HOME/images/realnode/`` keyed by a hash of the sources, so a warm run builds nothing and needs
no Go toolchain.

``python -m cluster images`` builds (or finds) them and prints their references and archives.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cluster.paths import REPO_ROOT, cache_home

__all__ = [
    "IMAGE_SOURCES",
    "LocalImage",
    "archive_references",
    "ensure_image",
    "http_image",
    "pause_image",
    "write_oci_archive",
]

IMAGE_SOURCES = REPO_ROOT / "hack" / "cluster" / "images"
_FORMAT = "1"  # bump when the archive layout written below changes (part of every cache key)
_REPOSITORY = "localhost/slm-realnode"
_NONROOT = "65532:65532"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class LocalImage:
    """One cached image: its reference (what pods and containerd name it) and its OCI archive."""

    program: str
    reference: str
    archive: Path


def _source_key(program: str) -> str:
    """A hash of everything that decides the image: the module file, the program's sources, the format."""
    digest = hashlib.sha256(f"format {_FORMAT}\n".encode())
    files = [IMAGE_SOURCES / "go.mod", *sorted((IMAGE_SOURCES / program).glob("*.go"))]
    for path in files:
        digest.update(f"{path.relative_to(IMAGE_SOURCES)}\n".encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _tar_member(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, mode, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _layer(files: dict[str, tuple[bytes, int]]) -> bytes:
    """An uncompressed, reproducible tar layer holding `files` (path -> (content, mode))."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, (content, mode) in sorted(files.items()):
            tar.addfile(_tar_member(name.lstrip("/"), len(content), mode), io.BytesIO(content))
    return buffer.getvalue()


def _json(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def write_oci_archive(
    path: Path,
    reference: str,
    files: dict[str, tuple[bytes, int]],
    entrypoint: list[str],
    *,
    user: str = _NONROOT,
) -> str:
    """Write a single-layer linux/amd64 image as an OCI image layout in a tar file; returns the manifest
    digest. The index names the image by `reference` in both annotations containerd reads on import."""
    layer = _layer(files)
    compressed = gzip.compress(layer, mtime=0)
    config = _json(
        {
            "architecture": "amd64",
            "os": "linux",
            "created": "1970-01-01T00:00:00Z",
            "config": {"Entrypoint": entrypoint, "User": user, "Env": ["PATH=/"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
            "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "tests/cluster/images.py"}],
        }
    )
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_MANIFEST,
            "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(config), "size": len(config)},
            "layers": [{"mediaType": MEDIA_LAYER, "digest": _digest(compressed), "size": len(compressed)}],
        }
    )
    index = _json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": [
                {
                    "mediaType": MEDIA_MANIFEST,
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {ANNOTATION_CONTAINERD_NAME: reference, ANNOTATION_REF_NAME: reference},
                }
            ],
        }
    )
    entries = {
        "oci-layout": _json({"imageLayoutVersion": "1.0.0"}),
        "index.json": index,
        **{f"blobs/sha256/{_digest(blob)[7:]}": blob for blob in (config, manifest, compressed)},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        partial = Path(handle.name)
    try:
        with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_dir("blobs"))
            tar.addfile(_dir("blobs/sha256"))
            for name, data in entries.items():
                tar.addfile(_tar_member(name, len(data), 0o644), io.BytesIO(data))
        partial.chmod(0o644)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return _digest(manifest)


def _dir(name: str) -> tarfile.TarInfo:
    info = _tar_member(name, 0, 0o755)
    info.type = tarfile.DIRTYPE
    return info


def archive_references(archive: Path) -> dict[str, str]:
    """The image references an OCI archive names (containerd's name annotation, else the OCI ref name),
    each mapped to its manifest (or index) digest."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("index.json")
        if member is None:
            raise ValueError(f"{archive}: no index.json (not an OCI image archive)")
        index = json.load(member)
    names = {}
    for descriptor in index.get("manifests", []):
        annotations = descriptor.get("annotations") or {}
        name = annotations.get(ANNOTATION_CONTAINERD_NAME) or annotations.get(ANNOTATION_REF_NAME)
        if name:
            names[name] = descriptor["digest"]
    return names


def _go_build(program: str, output: Path) -> None:
    if shutil.which("go") is None:
        raise RuntimeError(f"go is needed once to build the {program} image from {IMAGE_SOURCES / program}")
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-buildvcs=false -mod=mod"}
    result = subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(output), f"./{program}"],
        cwd=IMAGE_SOURCES,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"go build ./{program} in {IMAGE_SOURCES} failed:\n{result.stderr}")


def ensure_image(program: str, cache: Path | None = None) -> LocalImage:
    """The cached image of hack/cluster/images/<program>, built first when its sources changed."""
    key = _source_key(program)
    root = (cache or cache_home()) / "images" / "realnode"
    image = LocalImage(program, f"{_REPOSITORY}/{program}:{key}", root / f"{program}-{key}.oci.tar")
    if image.archive.is_file():
        return image
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".build-{program}-") as scratch:
        binary = Path(scratch) / program
        _go_build(program, binary)
        files = {f"/{program}": (binary.read_bytes(), 0o755)}
        write_oci_archive(image.archive, image.reference, files, [f"/{program}"])
    return image


def pause_image(cache: Path | None = None) -> LocalImage:
    """The pod sandbox image (containerd's `sandbox_image`)."""
    return ensure_image("pause", cache)


def http_image(cache: Path | None = None) -> LocalImage:
    """The smoke-test workload (see hack/cluster/images/testserver/main.go)."""
    return ensure_image("testserver", cache)
