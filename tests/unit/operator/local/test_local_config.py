"""A manifest rendered for this machine: the operator's runtime environment, then the runtime's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_operator.api import Accelerator, ManifestError
from slm_operator.local.config import load_resource, local_accelerator, plan_local, prepare
from slm_operator.local.targets import resource_for_source
from slm_operator.render.runtime_env import runtime_environment
from slm_operator.settings import OperatorSettings
from slm_runtime.fetch import NotCachedError


def test_environment_is_the_operators_with_local_host_and_cache(manifest: Path, cache: Path) -> None:
    resource = load_resource(manifest)
    settings = OperatorSettings()
    plan = plan_local(resource, cache_dir=cache, settings=settings, gpu=lambda: False)
    pod_env = runtime_environment(resource.spec, settings.profile(Accelerator.CPU), cache_dir="/models")
    differs = {k for k in pod_env if pod_env[k] != plan.env.get(k)}
    assert differs == {"SLM_HOST", "SLM_MODEL_CACHE"}
    assert set(plan.env) == set(pod_env)
    assert plan.env["SLM_HOST"] == "127.0.0.1" and plan.env["SLM_MODEL_CACHE"] == str(cache.absolute())
    assert plan.env["SLM_PORT"] == "12345" and plan.url == "http://127.0.0.1:12345"
    assert plan.accelerator is Accelerator.CPU and plan.env["SLM_GPU_LAYERS"] == "0"


def test_port_and_accelerator_overrides(manifest: Path, cache: Path) -> None:
    resource = load_resource(manifest)
    plan = plan_local(resource, cache_dir=cache, port=11999, accelerator=Accelerator.NVIDIA_GPU, gpu=lambda: False)
    assert plan.env["SLM_PORT"] == "11999"
    assert plan.env["SLM_GPU_LAYERS"] == "-1"  # the nvidia-gpu profile offloads every layer


@pytest.mark.parametrize(
    ("hardware", "gpu", "expected"),
    [
        (None, True, Accelerator.CPU),
        ({"accelerator": "nvidia-gpu", "fallback": ["cpu"]}, True, Accelerator.NVIDIA_GPU),
        ({"accelerator": "nvidia-gpu", "fallback": ["cpu"]}, False, Accelerator.CPU),
        ({"accelerator": "amd-gpu"}, False, Accelerator.CPU),
        ({"accelerator": "cpu", "fallback": ["nvidia-gpu"]}, True, Accelerator.CPU),
    ],
)
def test_local_accelerator_walks_the_tiers(
    hardware: dict[str, object] | None, gpu: bool, expected: Accelerator
) -> None:
    resource = resource_for_source("ollama://qwen2.5:0.5b")
    if hardware is not None:
        resource = resource.model_copy(
            update={"spec": resource.spec.model_validate({**resource.spec.to_wire(), "hardware": hardware})}
        )
    assert local_accelerator(resource, gpu=gpu) is expected


def test_prepare_builds_runtime_settings_from_the_rendered_env(manifest: Path, cache: Path, fake_gguf: Path) -> None:
    plan = plan_local(load_resource(manifest), cache_dir=cache, gpu=lambda: False)
    model, settings = prepare(plan, environ={})
    assert Path(model.path) == fake_gguf and model.format == "gguf"
    assert settings.model.model == fake_gguf
    assert settings.served_name == "tiny:1b"
    assert (settings.server.host, settings.server.port) == ("127.0.0.1", 12345)
    assert (settings.server.parallel, settings.server.max_queue) == (2, 3)
    assert settings.sampling.temperature == 0.2 and settings.sampling.top_k == 7
    assert settings.sampling.stop == ("</s>",)
    assert settings.model.context_length == 512 and settings.engine.threads == 3
    assert settings.model.system == "Be brief."
    assert settings.model.model_digest == model.digest
    assert settings.server.api_key is None


def test_prepare_takes_the_api_key_from_flag_or_environment(manifest: Path, cache: Path) -> None:
    plan = plan_local(load_resource(manifest), cache_dir=cache, gpu=lambda: False)
    _, from_env = prepare(plan, environ={"SLM_API_KEY": "env-key"})
    assert from_env.server.api_key is not None and from_env.server.api_key.get_secret_value() == "env-key"
    _, from_flag = prepare(plan, api_key="flag-key", environ={"SLM_API_KEY": "env-key"})
    assert from_flag.server.api_key is not None and from_flag.server.api_key.get_secret_value() == "flag-key"


def test_offline_and_not_cached_fails(cache: Path) -> None:
    plan = plan_local(resource_for_source("ollama://qwen2.5:0.5b"), cache_dir=cache, gpu=lambda: False)
    with pytest.raises(NotCachedError, match="offline and not cached"):
        prepare(plan, offline=True, environ={})


def test_several_documents_need_a_name(tmp_path: Path, manifest: Path) -> None:
    text = manifest.read_text()
    both = tmp_path / "both.yaml"
    both.write_text(text + "---\n" + text.replace("name: tiny}", "name: other}"))
    with pytest.raises(ManifestError, match="holds 2 SLMDeployments \\(tiny, other\\); pick one with --name"):
        load_resource(both)
    assert load_resource(both, "other").metadata.name == "other"
    with pytest.raises(ManifestError, match="no SLMDeployment named 'third'"):
        load_resource(both, "third")
