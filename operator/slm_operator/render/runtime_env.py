"""The runtime configuration of one SLMDeployment, as the SLM_* environment `slm-runtime serve` reads.

The operator writes these variables into the pod spec; `slm serve` passes the very same mapping to a local
runtime, so a manifest behaves alike on a cluster and on a laptop.
"""

from __future__ import annotations

import json

from slm_operator.api.quantity import parse_duration_seconds
from slm_operator.api.spec import Parameters, ServerSpec, SLMDeploymentSpec
from slm_operator.hardware import HardwareProfile

__all__ = ["API_KEY_ENV", "runtime_environment"]

API_KEY_ENV = "SLM_API_KEY"

# spec.parameters field -> runtime variable
_PARAMETER_ENV = {
    "temperature": "SLM_TEMPERATURE",
    "top_p": "SLM_TOP_P",
    "top_k": "SLM_TOP_K",
    "min_p": "SLM_MIN_P",
    "num_predict": "SLM_NUM_PREDICT",
    "repeat_penalty": "SLM_REPEAT_PENALTY",
    "repeat_last_n": "SLM_REPEAT_LAST_N",
    "presence_penalty": "SLM_PRESENCE_PENALTY",
    "frequency_penalty": "SLM_FREQUENCY_PENALTY",
    "seed": "SLM_SEED",
    "context_length": "SLM_CONTEXT_LENGTH",
    "num_thread": "SLM_THREADS",
    "num_batch": "SLM_BATCH_SIZE",
}


def _number(value: float | int) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))


def _parameters(parameters: Parameters | None) -> dict[str, str]:
    env: dict[str, str] = {}
    if parameters is None:
        return env
    for field, name in _PARAMETER_ENV.items():
        value = getattr(parameters, field)
        if value is not None:
            env[name] = _number(value)
    if parameters.stop:
        env["SLM_STOP"] = json.dumps(parameters.stop)
    return env


def runtime_environment(
    spec: SLMDeploymentSpec, profile: HardwareProfile, *, cache_dir: str, host: str = "0.0.0.0"
) -> dict[str, str]:
    """SLM_* variables for `slm-runtime serve` (the API key is added separately, from its Secret)."""
    server = spec.server or ServerSpec()
    env = {
        "SLM_HOST": host,
        "SLM_PORT": str(server.port),
        "SLM_PARALLEL": str(server.parallel),
        "SLM_MAX_QUEUE": str(server.max_queue),
        "SLM_REQUEST_TIMEOUT": _number(parse_duration_seconds(server.request_timeout)),
        "SLM_MODEL_SOURCE": spec.model.source,
        "SLM_MODEL_CACHE": cache_dir,
        "SLM_MODEL_NAME": spec.model.served_name(),
        "SLM_MODEL_FORMAT": spec.resolved_format().value,
        "SLM_ENGINE": spec.resolved_engine().value,
        "SLM_GPU_LAYERS": str(profile.llama_gpu_layers),
        "SLM_EXECUTION_PROVIDER": profile.onnx_execution_provider,
    }
    if spec.model.sha256:
        env["SLM_MODEL_SHA256"] = spec.model.sha256
    if spec.system is not None:
        env["SLM_SYSTEM"] = spec.system
    if spec.template is not None:
        env["SLM_TEMPLATE"] = spec.template
    if spec.messages:
        env["SLM_MESSAGES"] = json.dumps([message.model_dump() for message in spec.messages])
    env.update(_parameters(spec.parameters))
    return env
