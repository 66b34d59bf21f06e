"""Where the pinned control-plane binaries live.

Versions come from hack/cluster/versions.env, the cache root from SLM_CACHE_HOME.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

__all__ = [
    "PIPELINE_BINARIES",
    "REPO_ROOT",
    "VERSIONS_FILE",
    "Binaries",
    "Versions",
    "binaries",
    "cache_home",
    "load_versions",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = REPO_ROOT / "hack" / "cluster" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "hack" / "cluster" / "build-bins.sh"


@dataclass(frozen=True)
class Versions:
    """The pinned component versions (one place: hack/cluster/versions.env)."""

    kubernetes: str
    etcd: str
    kwok: str
    helm: str
    metrics_server: str
    keda: str
    prometheus: str


def load_versions(path: Path = VERSIONS_FILE) -> Versions:
    """Parse the KEY=VALUE lines of versions.env (comments and blank lines ignored)."""
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip().strip("'\"")
    wanted = {f.name: f"{f.name.upper()}_VERSION" for f in fields(Versions)}
    missing = sorted(key for key in wanted.values() if key not in values)
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    return Versions(**{name: values[key] for name, key in wanted.items()})


def cache_home() -> Path:
    """The cache root shared with the Makefile (SLM_CACHE_HOME, default ~/.cache/slm-operator)."""
    configured = os.environ.get("SLM_CACHE_HOME")
    return Path(configured) if configured else Path.home() / ".cache" / "slm-operator"


@dataclass(frozen=True)
class Binaries:
    """Paths of every binary the control plane, the real node and its metrics pipeline run, plus kwok's stage
    files and KEDA's CRDs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    kwok: Path
    helm: Path
    kwok_stages: Path
    kubelet: Path
    kube_proxy: Path
    metrics_server: Path
    keda_operator: Path
    keda_adapter: Path
    keda_crds: Path
    prometheus: Path

    def missing(self, *, node: bool = True) -> list[Path]:
        """Paths that are not there yet (run hack/cluster/build-bins.sh to build them); with `node=False`
        only the control plane's (not the real node's kubelet and kube-proxy, nor the metrics pipeline's)."""
        skip = set() if node else {"kubelet", "kube_proxy", *PIPELINE_BINARIES}
        paths = (getattr(self, f.name) for f in fields(self) if f.name not in skip)
        return [path for path in paths if not path.exists()]

    def missing_pipeline(self) -> list[Path]:
        """The metrics pipeline's paths that are not there yet (see :mod:`cluster.metrics`)."""
        return [path for name in PIPELINE_BINARIES if not (path := getattr(self, name)).exists()]


PIPELINE_BINARIES = ("metrics_server", "keda_operator", "keda_adapter", "keda_crds", "prometheus")
"""The fields of :class:`Binaries` that only the metrics pipeline uses."""


def binaries(versions: Versions | None = None, root: Path | None = None) -> Binaries:
    """The cache layout written by build-bins.sh: bin/<component>-<version>/<component>."""
    v = versions or load_versions()
    bin_root = (root or cache_home()) / "bin"

    def path(component: str, version: str) -> Path:
        return bin_root / f"{component}-{version}" / component

    return Binaries(
        etcd=path("etcd", v.etcd),
        kube_apiserver=path("kube-apiserver", v.kubernetes),
        kube_controller_manager=path("kube-controller-manager", v.kubernetes),
        kube_scheduler=path("kube-scheduler", v.kubernetes),
        kubectl=path("kubectl", v.kubernetes),
        kwok=path("kwok", v.kwok),
        helm=path("helm", v.helm),
        kwok_stages=bin_root / f"kwok-{v.kwok}" / "stages",
        kubelet=path("kubelet", v.kubernetes),
        kube_proxy=path("kube-proxy", v.kubernetes),
        metrics_server=path("metrics-server", v.metrics_server),
        keda_operator=bin_root / f"keda-{v.keda}" / "keda-operator",
        keda_adapter=bin_root / f"keda-{v.keda}" / "keda-adapter",
        keda_crds=bin_root / f"keda-{v.keda}" / "crds",
        prometheus=path("prometheus", v.prometheus),
    )
