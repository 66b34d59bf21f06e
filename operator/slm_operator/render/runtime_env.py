"""The runtime configuration of one SLMDeployment, as the SLM_* environment `slm-runtime serve` reads.

Every variable name comes from the runtime's own settings (``slm_runtime.settings.env_name`` of a runtime field,
``parameter_field`` for the Modelfile names of spec.parameters), so the two sides cannot drift; the contract
tests (tests/unit/contract) load what this module writes with the runtime's settings loader. The operator
writes these variables into the pod spec; `slm serve` passes the very same mapping to a local runtime, so a
manifest behaves alike on a cluster and on a laptop.
"""

from __future__ import annotations

import json
from typing import Any

from slm_operator.api.quantity import parse_duration_seconds
from slm_operator.api.spec import Parameters, ServerSpec, SLMDeploymentSpec
from slm_operator.hardware import HardwareProfile
from slm_runtime.fetch.settings import ENV as FETCH_ENV
from slm_runtime.settings import env_name, parameter_field
from slm_runtime.source import SourceScheme

__all__ = ["API_KEY_ENV", "TERMINATION_LOG", "runtime_environment"]

API_KEY_ENV = env_name("api_key")
TERMINATION_LOG = "/dev/termination-log"  # the kubelet's terminationMessagePath default


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _parameters(parameters: Parameters | None) -> dict[str, str]:
    if parameters is None:
        return {}
    return {
        env_name(parameter_field(field)): _value(value)
        for field, value in parameters.model_dump(exclude_none=True).items()
    }


def runtime_environment(
    spec: SLMDeploymentSpec,
    profile: HardwareProfile,
    *,
    cache_dir: str,
    host: str = "0.0.0.0",
    pvc_root: str | None = None,
) -> dict[str, str]:
    """SLM_* variables for `slm-runtime serve` (the API key is added separately, from its Secret); ``pvc_root``:
    where the pod mounts pvc:// source claims (serve finds such a model there, as the pull did)."""
    server = spec.server or ServerSpec()
    values: dict[str, Any] = {
        "host": host,
        "port": server.port,
        "parallel": server.parallel,
        "max_queue": server.max_queue,
        "request_timeout": parse_duration_seconds(server.request_timeout),
        "drain_timeout": parse_duration_seconds(server.drain_timeout),
        "termination_log": TERMINATION_LOG,
        "honour_keep_alive": False,  # a pod keeps its model while it runs; scaling frees the memory
        "model_source": spec.model.source,
        "model_cache": cache_dir,
        "model_name": spec.model.served_name(),
        "model_format": spec.resolved_format().value,
        "engine": spec.resolved_engine().value,
        "gpu_layers": profile.llama_gpu_layers,
        "execution_provider": profile.onnx_execution_provider,
        "model_sha256": spec.model.sha256,
        "system": spec.system,
        "template": spec.template,
        "messages": json.dumps([message.model_dump() for message in spec.messages]) if spec.messages else None,
    }
    env = {env_name(field): _value(value) for field, value in values.items() if value is not None}
    env.update(_parameters(spec.parameters))
    if pvc_root is not None and spec.model.parsed_source.scheme is SourceScheme.PVC:
        (pvc_root_env, *_) = FETCH_ENV["pvc_root"]
        env[pvc_root_env] = pvc_root
    return env
