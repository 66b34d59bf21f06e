"""Operator settings: what a platform team configures once (the Helm chart's values), not per model.

``OperatorSettings`` (what the operator renders) is loaded from a YAML or JSON file named by
``SLM_OPERATOR_CONFIG`` (the chart mounts a ConfigMap there); ``ProcessSettings`` (how this operator process
runs: its Lease, metrics port, resync period, workers) from ``SLM_OPERATOR_*`` environment variables, which the
chart sets on the operator's container. Every field has a default so the operator also runs with neither.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from slm_operator import __version__
from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES, HardwareProfile

__all__ = ["CONFIG_ENV", "PROCESS_ENV_PREFIX", "OperatorSettings", "ProcessSettings", "load_settings"]

PROCESS_ENV_PREFIX = "SLM_OPERATOR_"
CONFIG_ENV = f"{PROCESS_ENV_PREFIX}CONFIG"


class ProcessSettings(BaseModel):
    """How this operator process runs; field ``x`` is read from ``SLM_OPERATOR_X``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    namespace: str = Field(default="default", min_length=1, description="Namespace of the leader Lease.")
    lease_name: str = Field(default="slm-operator-leader", min_length=1, description="Name of the leader Lease.")
    metrics_port: int = Field(default=8080, ge=0, le=65535, description="Port of /metrics and /healthz; 0: none.")
    resync_seconds: float = Field(
        default=10.0, gt=0, description="Period of the resync timer (drift repair, status, hardware fallback)."
    )
    workers: int = Field(default=16, ge=1, le=1024, description="Handlers run at once (and API connections).")

    @staticmethod
    def env_name(field: str) -> str:
        """``resync_seconds`` -> ``SLM_OPERATOR_RESYNC_SECONDS``."""
        return PROCESS_ENV_PREFIX + field.upper()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ProcessSettings:
        """The settings the environment gives; ValueError naming the variable when one is unusable."""
        env = os.environ if environ is None else environ
        given = {field: env[cls.env_name(field)] for field in cls.model_fields if cls.env_name(field) in env}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            problems = [f"{cls.env_name(str(e['loc'][0]))}: {e['msg']}" for e in exc.errors()]
            raise ValueError("invalid operator environment: " + "; ".join(problems)) from None

    @classmethod
    def describe(cls) -> str:
        """One line per variable, for `slm operator run --help`."""
        return ", ".join(
            f"${cls.env_name(name)} ({field.description} default {field.default})"
            for name, field in cls.model_fields.items()
        )


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
    prometheus_url: str = Field(
        default="http://prometheus-operated.monitoring.svc:9090",
        min_length=1,
        pattern=r"^https?://",
        description="The Prometheus that KEDA's triggers query (serverAddress of the ScaledObjects' prometheus "
        "triggers); it must scrape the model servers (their ServiceMonitors) and slm-gateway.",
    )
    gateway_service: str = Field(
        default="",
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?)?$",
        description="namespace/name of the slm-gateway Service; empty: no gateway, so minReplicas: 0 is refused "
        "(the model keeps one replica and reports the GatewayRequired condition).",
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
