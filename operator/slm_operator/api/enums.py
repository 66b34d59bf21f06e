"""Enumerations shared by the SLMDeployment API and the renderer."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Accelerator", "CacheVolume", "Engine", "ModelFormat", "Phase"]


class Accelerator(StrEnum):
    """The kind of hardware a model server runs on."""

    CPU = "cpu"
    NVIDIA_GPU = "nvidia-gpu"
    AMD_GPU = "amd-gpu"
    INTEL_GPU = "intel-gpu"
    NPU = "npu"


class ModelFormat(StrEnum):
    """On-disk format of the model weights."""

    GGUF = "gguf"
    ONNX = "onnx"


class Engine(StrEnum):
    """The inference engine that runs the model inside the runtime."""

    LLAMA_CPP = "llama-cpp"
    ONNXRUNTIME_GENAI = "onnxruntime-genai"

    @classmethod
    def for_format(cls, fmt: ModelFormat) -> Engine:
        """The engine that serves a model format by default."""
        return cls.LLAMA_CPP if fmt is ModelFormat.GGUF else cls.ONNXRUNTIME_GENAI

    @property
    def model_format(self) -> ModelFormat:
        """The only model format this engine loads."""
        return ModelFormat.GGUF if self is Engine.LLAMA_CPP else ModelFormat.ONNX


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
