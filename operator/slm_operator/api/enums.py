"""Enumerations shared by the SLMDeployment API and the renderer.

ModelFormat and Engine are the runtime's own (slm_runtime.formats): what the spec accepts is what the runtime
loads.
"""

from __future__ import annotations

from enum import StrEnum

from slm_runtime.formats import Engine, ModelFormat

__all__ = ["Accelerator", "CacheVolume", "Engine", "ModelFormat", "Phase"]


class Accelerator(StrEnum):
    """The kind of hardware a model server runs on."""

    CPU = "cpu"
    NVIDIA_GPU = "nvidia-gpu"
    AMD_GPU = "amd-gpu"
    INTEL_GPU = "intel-gpu"
    NPU = "npu"


class CacheVolume(StrEnum):
    """Where the model cache of each pod lives."""

    EMPTY_DIR = "emptyDir"
    PERSISTENT_VOLUME_CLAIM = "persistentVolumeClaim"


class Phase(StrEnum):
    """Coarse lifecycle phase reported in status.phase."""

    PENDING = "Pending"
    DOWNLOADING = "Downloading"
    LOADING = "Loading"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"
    # Autoscaling with minReplicas 0: the autoscaler took the idle model to zero replicas.
    SCALED_TO_ZERO = "ScaledToZero"
    # Coming back from zero (a request is waiting at slm-gateway): replicas asked for, none ready yet.
    WAKING = "Waking"
