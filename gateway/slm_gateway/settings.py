"""Gateway settings: one pydantic model, the source of the `slm-gateway` flags and SLM_GATEWAY_* variables.

Every field becomes one flag (``--max-held``) and one environment variable (``SLM_GATEWAY_MAX_HELD``); a flag
wins over the variable, the variable over the default. List fields take a comma-separated variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

__all__ = [
    "ENV_PREFIX",
    "GatewaySettings",
    "SettingsError",
    "WakeMode",
    "env_name",
    "flag_name",
    "settings_from_sources",
]

ENV_PREFIX = "SLM_GATEWAY_"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the flag or variable and the fix."""


class WakeMode(StrEnum):
    """How a request for a model at zero replicas wakes it."""

    DIRECT = "direct"
    """The gateway scales the Deployment to 1 and marks the ScaledObject force-activated (fastest)."""
    METRIC = "metric"
    """The gateway only holds; KEDA's activation trigger on the gateway's in-flight gauge wakes the model."""


class GatewaySettings(BaseModel):
    """Where the gateway listens, what it watches, who may call it, how it picks pods and wakes models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(
        "127.0.0.1", description="Address to listen on (the chart sets 0.0.0.0; locally only this machine)."
    )
    port: int = Field(
        11434,
        ge=1,
        le=65535,
        description="TCP port: Ollama's 11434, as every model Service, so Ollama clients work unchanged.",
    )
    namespaces: tuple[str, ...] = Field(
        (), description="Namespaces whose SLMDeployments are served; empty: every namespace."
    )
    kubeconfig: Path | None = Field(
        None, description="kubeconfig file; unset: in-cluster config, else $KUBECONFIG or ~/.kube/config."
    )
    keys_file: Path | None = Field(
        None,
        description="YAML list of {key, namespaces, models} API keys; unset: no gateway keys, the client's "
        "Authorization header goes to the model unchanged.",
    )
    prefix_affinity: bool = Field(
        False, description="Send requests that share a prompt prefix to the same pod (bounded-load hashing)."
    )
    prefix_chars: int = Field(100, ge=1, le=100_000, description="Prompt characters hashed for prefix affinity.")
    affinity_load_factor: float = Field(
        1.25,
        gt=1.0,
        le=10.0,
        description="A prefix's pod is skipped once its in-flight requests exceed this times the mean.",
    )
    wake: WakeMode = Field(
        WakeMode.DIRECT,
        description="How a model at zero wakes: direct (the gateway scales it to 1 and force-activates its "
        "ScaledObject) or metric (KEDA's activation on the gateway's in-flight gauge).",
    )
    max_held: int = Field(
        100, ge=0, le=100_000, description="Requests held per model while it has no ready pod; more get HTTP 503."
    )
    wake_timeout: float = Field(
        300.0, gt=0, description="Seconds a request is held for a ready pod before it gets HTTP 503."
    )
    retry_after: int = Field(5, ge=1, le=3600, description="Retry-After seconds sent with HTTP 503.")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to connect to a model pod.")
    drain_timeout: float = Field(
        30.0, ge=0, description="Seconds the requests in flight may take to finish after SIGTERM."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger bodies get HTTP 413."
    )

    @field_validator("namespaces", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


def env_name(field: str) -> str:
    """``max_held`` -> ``SLM_GATEWAY_MAX_HELD``."""
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    """``max_held`` -> ``--max-held``."""
    return "--" + field.replace("_", "-")


def settings_from_sources(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> GatewaySettings:
    """Settings from parsed flags (None: not given), then the environment, then the defaults; SettingsError
    naming the flag or variable of the first bad value."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for field in GatewaySettings.model_fields:
        if flags.get(field) is not None:
            values[field], origin[field] = flags[field], flag_name(field)
        elif env_name(field) in env:
            values[field], origin[field] = env[env_name(field)], env_name(field)
    try:
        return GatewaySettings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        where = origin.get(field, field)
        raise SettingsError(f"{where}: {first['msg']}") from None
