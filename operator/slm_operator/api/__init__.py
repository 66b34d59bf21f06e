"""The SLMDeployment v1alpha1 API: pydantic models that are the single source of truth for the CRD schema,
the API reference and validation."""

from slm_operator.api.enums import Accelerator, CacheVolume, Engine, ModelFormat, Phase
from slm_operator.api.errors import FieldError, ManifestError, load_manifest, validate_manifest
from slm_operator.api.resource import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
    SLMDeployment,
)
from slm_operator.api.spec import (
    AutoscalingSpec,
    CacheSpec,
    HardwareSpec,
    ModelSpec,
    Parameters,
    ServerSpec,
    SLMDeploymentSpec,
)
from slm_operator.api.status import Condition, SLMDeploymentStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "SHORT_NAMES",
    "SINGULAR",
    "VERSION",
    "Accelerator",
    "AutoscalingSpec",
    "CacheSpec",
    "CacheVolume",
    "Condition",
    "Engine",
    "FieldError",
    "HardwareSpec",
    "ManifestError",
    "ModelFormat",
    "ModelSpec",
    "Parameters",
    "Phase",
    "SLMDeployment",
    "SLMDeploymentSpec",
    "SLMDeploymentStatus",
    "ServerSpec",
    "load_manifest",
    "validate_manifest",
]
