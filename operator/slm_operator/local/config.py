"""From an SLMDeployment manifest to the runtime's settings, through the operator's render path.

The operator writes ``runtime_environment(spec, profile, ...)`` into pod specs; local mode renders the very
same SLM_* mapping (with the host's hardware profile and the laptop cache) and hands it to the runtime's own
settings loader, so a manifest means the same thing on a cluster and on a laptop.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slm_operator.api import Accelerator, ManifestError, ModelFormat, SLMDeployment, load_manifest
from slm_operator.api.errors import FieldError
from slm_operator.render.runtime_env import API_KEY_ENV, runtime_environment
from slm_operator.settings import OperatorSettings, load_settings
from slm_runtime.fetch import PulledModel, default_dest, pull
from slm_runtime.fetch.progress import ProgressFactory
from slm_runtime.settings import RuntimeSettings, settings_from_sources

__all__ = [
    "DEFAULT_HOST",
    "GPU_ACCELERATORS",
    "LocalPlan",
    "gpu_offload_available",
    "load_resource",
    "local_accelerator",
    "local_environment",
    "plan_local",
    "prepare",
]

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
GPU_ACCELERATORS = frozenset({Accelerator.NVIDIA_GPU, Accelerator.AMD_GPU, Accelerator.INTEL_GPU})


def load_resource(path: Path, name: str | None = None) -> SLMDeployment:
    """The SLMDeployment in ``path``; with several documents, the one called ``name`` (or the only one)."""
    resources = load_manifest(path)
    if name is not None:
        for resource in resources:
            if resource.metadata.name == name:
                return resource
        names = ", ".join(r.metadata.name for r in resources)
        problem = FieldError("metadata.name", f"no SLMDeployment named '{name}' (found {names})")
        raise ManifestError([problem], str(path))
    if len(resources) > 1:
        names = ", ".join(r.metadata.name for r in resources)
        raise ManifestError(
            [FieldError("", f"the file holds {len(resources)} SLMDeployments ({names}); pick one with --name")],
            str(path),
        )
    return resources[0]


def gpu_offload_available() -> bool:
    """Whether this machine's llama.cpp build can offload layers to a GPU."""
    try:
        import llama_cpp
    except ImportError:
        return False
    return bool(llama_cpp.llama_supports_gpu_offload())


def local_accelerator(resource: SLMDeployment, *, gpu: bool) -> Accelerator:
    """The first tier of spec.hardware (primary, then fallbacks) this machine can run; cpu otherwise.

    A laptop has no scheduler to wait on, so the fallback list is walked at once: a GPU tier is taken when the
    local llama.cpp offloads to a GPU (``gpu``), npu never (local NPUs need vendor runtimes), cpu always.
    """
    spec = resource.spec
    tiers = spec.hardware.tiers() if spec.hardware else [Accelerator.CPU]
    for tier in tiers:
        if tier is Accelerator.CPU:
            return tier
        if tier in GPU_ACCELERATORS and gpu and spec.resolved_format() is ModelFormat.GGUF:
            return tier
    return Accelerator.CPU


def local_environment(
    resource: SLMDeployment,
    settings: OperatorSettings,
    accelerator: Accelerator,
    *,
    cache_dir: Path,
    host: str = DEFAULT_HOST,
    port: int | None = None,
) -> dict[str, str]:
    """The SLM_* mapping the operator would give the pod, for this host: listen address, port and cache."""
    env = runtime_environment(
        resource.spec, settings.profile(accelerator), cache_dir=str(cache_dir.absolute()), host=host
    )
    if port is not None:
        env["SLM_PORT"] = str(port)
    return env


@dataclass(frozen=True)
class LocalPlan:
    """What `slm serve` is about to do: the resource, where it runs and the runtime environment."""

    resource: SLMDeployment
    accelerator: Accelerator
    cache_dir: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        host = self.env["SLM_HOST"]
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
        return f"http://{shown}:{self.env['SLM_PORT']}"


def plan_local(
    resource: SLMDeployment,
    *,
    cache_dir: Path | None = None,
    host: str = DEFAULT_HOST,
    port: int | None = None,
    accelerator: Accelerator | None = None,
    settings: OperatorSettings | None = None,
    gpu: Callable[[], bool] = gpu_offload_available,
) -> LocalPlan:
    """Render the runtime environment of ``resource`` for this machine (no I/O beyond the GPU probe)."""
    settings = settings or load_settings()
    chosen = accelerator or local_accelerator(resource, gpu=gpu())
    cache = cache_dir or default_dest()
    env = local_environment(resource, settings, chosen, cache_dir=cache, host=host, port=port)
    return LocalPlan(resource=resource, accelerator=chosen, cache_dir=cache, env=env)


def prepare(
    plan: LocalPlan,
    *,
    offline: bool = False,
    progress: ProgressFactory | None = None,
    api_key: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[PulledModel, RuntimeSettings]:
    """Pull the model into the cache when needed, then load the runtime settings from the rendered env.

    ``api_key``: the bearer token (a cluster reads it from spec.server.apiKeySecretRef; locally it comes from
    the --api-key flag or $SLM_API_KEY). Raises the fetcher's errors and the runtime's SettingsError.
    """
    env = os.environ if environ is None else environ
    spec = plan.resource.spec
    model = pull(spec.model.source, plan.cache_dir, sha256=spec.model.sha256, offline=offline, progress=progress)
    flags: dict[str, Any] = {}
    key = api_key or env.get(API_KEY_ENV)
    if key:
        flags["api_key"] = key
    elif spec.server is not None and spec.server.api_key_secret_ref is not None:
        ref = spec.server.api_key_secret_ref
        log.warning(
            "spec.server.apiKeySecretRef (%s/%s) is a cluster Secret: serving without auth locally; "
            "pass --api-key or set %s to require a token",
            ref.name,
            ref.key,
            API_KEY_ENV,
        )
    return model, settings_from_sources(flags, plan.env)
