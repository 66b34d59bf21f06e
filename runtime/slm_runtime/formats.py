"""Model formats and inference engines: the names the runtime accepts, shared with the operator's API.

The operator's ``spec.model.format`` and ``spec.engine`` enums are these classes (slm_operator.api.enums
re-exports them), so a format or engine added here reaches the CRD, the renderer and the runtime at once.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Engine", "ModelFormat"]


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
