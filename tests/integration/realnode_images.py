"""The project's own images on the real node: `hack/images/build.sh operator runtime-cpu` builds them (once per
session; a warm call takes seconds, a cold one builds the base image and the llama.cpp wheel first) and
:meth:`RealNode.import_image` puts them into the node's containerd, where pods find them with
``imagePullPolicy: IfNotPresent``. No registry is involved anywhere.

Used by tests/integration/test_real_node_slm.py and bench/real_node.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cluster.paths import REPO_ROOT
from cluster.realnode import RealNode

__all__ = ["BUILD_SCRIPT", "ProjectImages", "build_archives", "project_images", "split_reference"]

BUILD_SCRIPT = REPO_ROOT / "hack" / "images" / "build.sh"
TARGETS = ("operator", "runtime-cpu")
BUILD_TIMEOUT = 90 * 60.0  # cold: base image, the llama.cpp wheel compile and both images on 2 cores
ATTEMPTS = 3  # another session may be finishing (or racing) a build of the same inputs

Progress = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[images] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ProjectImages:
    """Full references of the imported images (``docker.io/slm-operator/operator:0.1.0``) and their archives."""

    operator: str
    runtime: str
    archives: tuple[Path, ...]


def split_reference(reference: str) -> tuple[str, str]:
    """``docker.io/slm-operator/operator:0.1.0`` -> (``docker.io/slm-operator/operator``, ``0.1.0``)."""
    repository, _, tag = reference.rpartition(":")
    if not repository or "/" in tag:
        raise ValueError(f"{reference}: not a repository:tag reference")
    return repository, tag


def build_archives(progress: Progress = _stderr, timeout: float = BUILD_TIMEOUT) -> list[Path]:
    """The oci-archives of the operator and cpu runtime images, built by hack/images/build.sh when their inputs
    changed. A failed build is retried (after a pause) up to ATTEMPTS times: the script locks per image, and a
    build that another session is finishing can fail this one's first try."""
    errors = []
    for attempt in range(1, ATTEMPTS + 1):
        started = time.monotonic()
        progress(f"{BUILD_SCRIPT.relative_to(REPO_ROOT)} {' '.join(TARGETS)} (attempt {attempt})")
        with subprocess.Popen(
            [str(BUILD_SCRIPT), *TARGETS],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as build:
            assert build.stderr is not None and build.stdout is not None
            deadline = time.monotonic() + timeout
            tail: list[str] = []
            for line in build.stderr:  # progress lines; the archives' paths come on stdout
                tail = [*tail[-40:], line.rstrip()]
                if " images: " in line:  # the script's own progress, not the builder's steps
                    progress(line.rstrip())
                if time.monotonic() > deadline:
                    build.kill()
                    break
            out = build.stdout.read()
            code = build.wait()
        if code == 0:
            archives = [Path(line) for line in out.split() if line.endswith(".tar")]
            if len(archives) == len(TARGETS) and all(path.is_file() for path in archives):
                progress(f"images ready in {time.monotonic() - started:.0f}s: {', '.join(p.name for p in archives)}")
                return archives
            errors.append(f"attempt {attempt}: exit 0 but the archives are {out.split()}")
        else:
            errors.append(f"attempt {attempt}: exit {code}:\n" + "\n".join(tail[-15:]))
        if attempt < ATTEMPTS:
            time.sleep(30)
    raise RuntimeError(f"{BUILD_SCRIPT.name} failed {ATTEMPTS} times:\n" + "\n\n".join(errors))


_IMPORTED: dict[Path, ProjectImages] = {}


def project_images(node: RealNode, progress: Progress = _stderr) -> ProjectImages:
    """Build (when needed) and import the operator and runtime images into ``node``; once per node and process."""
    if node.dir in _IMPORTED:
        return _IMPORTED[node.dir]
    archives = build_archives(progress)
    references = [reference for archive in archives for reference in node.import_image(archive)]
    operator = [r for r in references if "/operator:" in r]
    runtime = [r for r in references if "/slm-runtime:" in r]
    if len(operator) != 1 or len(runtime) != 1:
        raise RuntimeError(f"expected one operator and one runtime image in {archives}, got {references}")
    images = ProjectImages(operator=operator[0], runtime=runtime[0], archives=tuple(archives))
    _IMPORTED[node.dir] = images
    return images
