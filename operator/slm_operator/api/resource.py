"""The SLMDeployment resource: identity constants and the whole-object model."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator

from slm_operator.api.base import ApiModel
from slm_operator.api.spec import SLMDeploymentSpec
from slm_operator.api.status import SLMDeploymentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "ObjectMeta",
    "SLMDeployment",
    "name_for",
]

GROUP = "slm-operator.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "SLMDeployment"
PLURAL = "slmdeployments"
SINGULAR = "slmdeployment"
SHORT_NAMES = ("slm", "slmd")

# Names become Service names, which must be DNS-1035 labels.
NAME_PATTERN = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"


def name_for(text: str) -> str:
    """A valid metadata.name made from any model name: 'qwen2.5:3b' -> 'qwen2-5-3b', '3b' -> 'model-3b'."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not name[:1].isalpha():
        name = f"model-{name}".rstrip("-")
    return name[:63].rstrip("-")


class ObjectMeta(ApiModel):
    """The part of metav1.ObjectMeta a manifest author writes; server-set fields are accepted and kept."""

    model_config = ConfigDict(**{**ApiModel.model_config, "extra": "allow"})

    name: str = Field(
        max_length=63,
        json_schema_extra={"pattern": NAME_PATTERN},
        description="Name; also the Service and Deployment name.",
    )
    namespace: str | None = Field(default=None, max_length=63, description="Namespace.")
    labels: dict[str, str] | None = Field(default=None, description="Labels.")
    annotations: dict[str, str] | None = Field(default=None, description="Annotations.")

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            raise ValueError(
                f"'{value}' is not a DNS-1035 label; use lower-case letters, digits and '-', starting with a "
                "letter (it names the Service), e.g. my-assistant"
            )
        return value


class SLMDeployment(ApiModel):
    """A small language model served on Kubernetes."""

    api_version: Literal["slm-operator.io/v1alpha1"] = Field(description="slm-operator.io/v1alpha1")
    kind: Literal["SLMDeployment"] = Field(description="SLMDeployment")
    metadata: ObjectMeta = Field(description="Standard object metadata.")
    spec: SLMDeploymentSpec = Field(description="Desired state.")
    status: SLMDeploymentStatus | None = Field(default=None, description="Observed state, written by the operator.")

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_is_mapping(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            raise ValueError("metadata must be a mapping with at least a name")
        return value
