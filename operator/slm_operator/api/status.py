"""SLMDeployment .status: what the operator observed, written only by the operator."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from slm_operator.api.base import ApiModel
from slm_operator.api.enums import Accelerator, Engine, Phase

__all__ = ["Condition", "HardwareStatus", "ModelStatus", "SLMDeploymentStatus"]


class Condition(ApiModel):
    """One aspect of the current state (the shape of metav1.Condition)."""

    type: str = Field(
        max_length=316, description="Condition type: Ready, Progressing, Degraded, HardwareFallback, Autoscaling."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    reason: str = Field(
        max_length=1024,
        pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        description="CamelCase machine-readable cause.",
    )
    message: str = Field(default="", max_length=32768, description="Human-readable details.")
    last_transition_time: str = Field(
        json_schema_extra={"format": "date-time"}, description="When status last changed (RFC 3339)."
    )
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition is about."
    )


class HardwareStatus(ApiModel):
    """The accelerator tier in use."""

    active: Accelerator | None = Field(default=None, description="Accelerator the pods are rendered for now.")
    reason: str | None = Field(default=None, description="Why this tier (e.g. which tiers stayed unschedulable).")


class ModelStatus(ApiModel):
    """The model the pods loaded, as reported by the fetcher."""

    source: str | None = Field(default=None, description="Source the pods pulled.")
    digest: str | None = Field(default=None, description="sha256:<hex> of the model file.")
    size_bytes: int | None = Field(default=None, ge=0, description="Size of the model in bytes.")


class SLMDeploymentStatus(ApiModel):
    """The observed state of an SLMDeployment."""

    phase: Phase | None = Field(
        default=None,
        description="Pending, Downloading, Loading, Ready, Degraded, Failed, ScaledToZero (autoscaled to zero "
        "replicas while idle) or Waking (scaling up from zero).",
    )
    observed_generation: int | None = Field(default=None, ge=0, description="Last metadata.generation reconciled.")
    replicas: int | None = Field(default=None, ge=0, description="Pods that exist (the scale subresource reads it).")
    ready_replicas: int | None = Field(default=None, ge=0, description="Pods serving requests.")
    selector: str | None = Field(default=None, description="Label selector of the pods, for the scale subresource.")
    endpoint: str | None = Field(default=None, description="In-cluster URL of the Ollama/OpenAI API.")
    engine: Engine | None = Field(default=None, description="Engine in use (spec.engine or its default).")
    hardware: HardwareStatus | None = Field(default=None, description="Active accelerator tier.")
    model: ModelStatus | None = Field(default=None, description="Model file in use.")
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
        description="Ready, Progressing, Degraded, HardwareFallback and Autoscaling conditions.",
    )
