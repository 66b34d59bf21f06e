"""Operator settings: what a platform team configures once (the Helm chart's values), not per model.

Loaded from a YAML or JSON file named by ``SLM_OPERATOR_CONFIG`` (the chart mounts a ConfigMap there);
every field has a default so the operator also runs with no file at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from slm_operator import __version__
from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES, HardwareProfile

__all__ = ["CONFIG_ENV", "OperatorSettings", "load_settings"]

CONFIG_ENV = "SLM_OPERATOR_CONFIG"


class OperatorSettings(BaseModel):
    """Cluster-wide defaults of the operator."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    runtime_image: str = Field(
        default=f"ghcr.io/slm-operator/slm-runtime:{__version__}",
        description="Runtime image for cpu; other accelerators use '<image>-<variant>' unless listed below.",
    )
    runtime_image_variants: dict[str, str] = Field(
        default_factory=dict, description="Image per hardware-profile image variant (cuda, rocm, openvino ...)."
    )
    image_pull_policy: str = Field(default="IfNotPresent", description="Pull policy of runtime images.")
    field_manager: str = Field(default="slm-operator", description="Server-side apply field manager.")
    cache_mount_path: str = Field(default="/models", description="Where pods mount the model cache.")
    pvc_mount_root: str = Field(default="/sources", description="Where pvc:// source claims are mounted.")
    default_requests: dict[str, str] = Field(
        default_factory=lambda: {"cpu": "1", "memory": "1Gi"},
        description="Requests of the model server when spec.resources sets none.",
    )
    pull_resources: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        description="Resources of the model-pull init container.",
    )
    startup_timeout_seconds: int = Field(
        default=900, ge=30, description="How long a pod may take to download and load its model before restart."
    )
    hardware_profiles: dict[Accelerator, HardwareProfile] = Field(
        default_factory=lambda: dict(DEFAULT_PROFILES), description="Hardware profiles by accelerator."
    )

    def profile(self, accelerator: Accelerator) -> HardwareProfile:
        return self.hardware_profiles.get(accelerator, DEFAULT_PROFILES[accelerator])

    def image_for(self, profile: HardwareProfile) -> str:
        """The runtime image built for the profile's variant."""
        variant = profile.image_variant
        if variant == "cpu":
            return self.runtime_image
        return self.runtime_image_variants.get(variant, f"{self.runtime_image}-{variant}")


def load_settings(path: str | Path | None = None) -> OperatorSettings:
    """Settings from ``path`` (or $SLM_OPERATOR_CONFIG); defaults when neither is set."""
    target = path or os.environ.get(CONFIG_ENV)
    if not target:
        return OperatorSettings()
    data: Any = yaml.safe_load(Path(target).read_text(encoding="utf-8")) or {}
    profiles = data.pop("hardwareProfiles", None) or data.pop("hardware_profiles", None)
    fields = {_snake(k): v for k, v in data.items()}
    if profiles:
        merged = dict(DEFAULT_PROFILES)
        for name, profile in profiles.items():
            accelerator = Accelerator(name)
            base = DEFAULT_PROFILES[accelerator].model_dump()
            merged[accelerator] = HardwareProfile.model_validate(
                {**base, **{_snake(k): v for k, v in profile.items()}, "accelerator": accelerator}
            )
        fields["hardware_profiles"] = merged
    return OperatorSettings.model_validate(fields)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)
