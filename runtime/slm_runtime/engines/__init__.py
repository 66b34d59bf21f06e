"""Inference engines behind one interface (:class:`~slm_runtime.engines.base.Engine`)."""

from __future__ import annotations

from slm_runtime.engines.base import Engine
from slm_runtime.settings import RuntimeSettings

__all__ = ["load_engine"]


def load_engine(settings: RuntimeSettings) -> Engine:
    """Load the model with the engine the settings name (imported lazily: each pulls a native library)."""
    if settings.engine_name == "onnxruntime-genai":
        from slm_runtime.engines.onnx_genai import OnnxGenaiEngine

        engine: Engine = OnnxGenaiEngine.load(settings)
        return engine
    from slm_runtime.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine.load(settings)
