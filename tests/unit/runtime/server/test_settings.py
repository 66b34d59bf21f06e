"""Settings: flags over environment over the metadata file over defaults; errors name the flag."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_runtime.server.cli import register
from slm_runtime.settings import SettingsError, settings_from_sources


def test_precedence_flag_env_metadata_default(tmp_path: Path) -> None:
    metadata = tmp_path / "model.json"
    metadata.write_text(
        json.dumps(
            {
                "template": "{{ .Prompt }}",
                "system": "meta system",
                "parameters": {"temperature": 0.1, "topK": 7, "num_ctx": 2048, "stop": "END", "mirostat": 1},
            }
        )
    )
    env = {"SLM_MODEL": str(tmp_path / "m.gguf"), "SLM_TEMPERATURE": "0.5", "SLM_PARALLEL": "3"}
    settings = settings_from_sources({"model_metadata": str(metadata), "parallel": 2}, env)
    assert settings.server.parallel == 2  # flag beats env
    assert settings.sampling.temperature == 0.5  # env beats metadata
    assert settings.sampling.top_k == 7  # metadata beats default (camelCase accepted)
    assert settings.model.context_length == 2048  # num_ctx alias
    assert settings.sampling.stop == ("END",)
    assert settings.model.system == "meta system"
    assert settings.served_name == "m"
    assert settings.engine_name == "llama-cpp"


def test_env_stop_list_and_bool(tmp_path: Path) -> None:
    env = {"SLM_MODEL": str(tmp_path), "SLM_STOP": '["a", "b"]', "SLM_LOG_PROMPTS": "true"}
    settings = settings_from_sources({}, env)
    assert settings.sampling.stop == ("a", "b")
    assert settings.server.log_prompts is True
    assert settings.model_format == "onnx"  # a folder
    assert settings.engine_name == "onnxruntime-genai"


def test_errors_name_the_flag_and_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="--model PATH"):
        settings_from_sources({}, {})
    with pytest.raises(SettingsError, match="--parallel / SLM_PARALLEL"):
        settings_from_sources({"model": "x.gguf", "parallel": 0}, {})
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    with pytest.raises(SettingsError, match="not valid JSON"):
        settings_from_sources({"model": "x.gguf", "model_metadata": str(bad)}, {})


def test_serve_flags_parse_into_settings() -> None:
    import argparse

    from slm_runtime.server.cli import settings_from_args

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(
        ["serve", "--model", "g.gguf", "--max-queue", "5", "--api-key", "k", "--stop", "x", "--stop", "y"]
    )
    settings = settings_from_args(args)
    assert settings.server.max_queue == 5
    assert settings.server.api_key.get_secret_value() == "k"
    assert settings.sampling.stop == ("x", "y")


def test_pull_record_beside_the_model_is_used(tmp_path: Path) -> None:
    model = tmp_path / "gemma.gguf"
    model.write_bytes(b"GGUF")
    digest = "sha256:" + "ab" * 32
    record = {
        "path": str(model),
        "source": "ollama://gemma3:270m",
        "digest": digest,
        "sizeBytes": 4,
        "format": "gguf",
        "metadata": {"template": "{{ .Prompt }}", "system": "S", "parameters": {"stop": ["<end>"], "top_p": 0.5}},
        "cached": False,
    }
    (tmp_path / "gemma.gguf.slm.json").write_text(json.dumps(record))
    settings = settings_from_sources({"model": str(model)}, {})
    assert settings.model.model_digest == digest
    assert settings.model.model_format == "gguf"
    assert settings.model.template == "{{ .Prompt }}"
    assert settings.model.system == "S"
    assert settings.sampling.stop == ("<end>",)
    assert settings.sampling.top_p == 0.5
    overridden = settings_from_sources({"model": str(model), "system": "mine", "model_digest": None}, {})
    assert overridden.model.system == "mine"


def test_model_found_from_source_and_cache_like_in_a_pod(tmp_path: Path) -> None:
    """The operator sets SLM_MODEL_SOURCE/SLM_MODEL_CACHE (no path): serve finds what `pull` recorded."""
    from slm_runtime.fetch import NullProgress, pull

    model = tmp_path / "models" / "tiny.gguf"
    model.parent.mkdir()
    model.write_bytes(b"GGUF" + bytes(60))
    cache = tmp_path / "cache"
    pulled = pull(f"file://{model}", cache, progress=lambda _label: NullProgress())
    env = {
        "SLM_MODEL_SOURCE": f"file://{model}",
        "SLM_MODEL_CACHE": str(cache),
        "SLM_MODEL_SHA256": pulled.sha256,
        "SLM_ENGINE": "llama-cpp",
        "SLM_EXECUTION_PROVIDER": "rocm",
    }
    settings = settings_from_sources({}, env)
    assert settings.model.model == Path(pulled.path)
    assert settings.model.model_digest == pulled.digest
    assert settings.engine.execution_provider == "rocm"
    with pytest.raises(SettingsError, match="slm-runtime pull"):
        settings_from_sources({}, {**env, "SLM_MODEL_SHA256": "0" * 64})
    with pytest.raises(SettingsError, match="not in the cache"):
        settings_from_sources({}, {**env, "SLM_MODEL_CACHE": str(tmp_path / "empty")})


def test_operator_rendered_environment_is_accepted(tmp_path: Path) -> None:
    """The SLM_* mapping the operator writes for examples/gemma3-270m.yaml configures `serve` as intended."""
    from slm_operator.api.errors import load_manifest
    from slm_operator.hardware import profile_for
    from slm_operator.render.runtime_env import runtime_environment
    from slm_runtime.fetch import NullProgress, pull

    root = Path(__file__).resolve().parents[4]
    slm = load_manifest(root / "examples" / "gemma3-270m.yaml")[0]
    cache = tmp_path / "cache"
    env = runtime_environment(slm.spec, profile_for(slm.spec.hardware.accelerator), cache_dir=str(cache))
    pulled = pull(env["SLM_MODEL_SOURCE"], cache, progress=lambda _label: NullProgress())
    settings = settings_from_sources({}, {**env, "SLM_API_KEY": "k"})
    assert settings.model.model == Path(pulled.path)
    assert settings.served_name == "gemma3:270m"
    assert settings.engine_name == "llama-cpp"
    assert settings.model_format == "gguf"
    assert settings.server.host == "0.0.0.0"
    assert (settings.server.port, settings.server.parallel, settings.server.max_queue) == (11434, 4, 16)
    assert settings.model.context_length == 2048
    assert settings.engine.threads == 2
    assert (settings.sampling.temperature, settings.sampling.top_k, settings.sampling.top_p) == (0.7, 40, 0.9)
    assert settings.model.model_digest == pulled.digest


def test_preset_messages_from_the_environment_and_the_flag(tmp_path: Path) -> None:
    import argparse

    from slm_runtime.server.cli import settings_from_args

    preset = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    env = {"SLM_MODEL": str(tmp_path / "m.gguf"), "SLM_MESSAGES": json.dumps(preset)}
    settings = settings_from_sources({}, env)
    assert [(m.role, m.content) for m in settings.model.messages] == [("user", "Hi"), ("assistant", "Hello!")]
    assert settings_from_sources({}, {"SLM_MODEL": "m.gguf"}).model.messages == ()

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--model", "g.gguf", "--messages", json.dumps(preset[:1])])
    assert [m.content for m in settings_from_args(args).model.messages] == ["Hi"]


def test_bad_preset_messages_name_the_variable_and_the_fix(tmp_path: Path) -> None:
    model = str(tmp_path / "m.gguf")
    with pytest.raises(SettingsError, match=r'SLM_MESSAGES is not JSON: give a list like \[\{"role"'):
        settings_from_sources({}, {"SLM_MODEL": model, "SLM_MESSAGES": "user: hi"})
    with pytest.raises(SettingsError, match="SLM_MESSAGES must be a JSON list"):
        settings_from_sources({}, {"SLM_MODEL": model, "SLM_MESSAGES": '{"role": "user"}'})
    with pytest.raises(SettingsError, match="--messages / SLM_MESSAGES"):
        settings_from_sources({}, {"SLM_MODEL": model, "SLM_MESSAGES": '[{"role": "tool", "content": "x"}]'})


def test_preset_messages_the_operator_renders_reach_the_runtime(tmp_path: Path) -> None:
    from slm_operator.api.errors import load_manifest
    from slm_operator.api.spec import ChatMessage
    from slm_operator.hardware import profile_for
    from slm_operator.render.runtime_env import runtime_environment

    root = Path(__file__).resolve().parents[4]
    slm = load_manifest(root / "examples" / "gemma3-270m.yaml")[0]
    preset = [ChatMessage(role="system", content='Answer in "quotes".'), ChatMessage(role="user", content="Hé")]
    spec = slm.spec.model_copy(update={"messages": preset})
    env = runtime_environment(spec, profile_for(spec.hardware.accelerator), cache_dir=str(tmp_path))
    settings = settings_from_sources({"model": str(tmp_path / "m.gguf")}, env)
    assert [(m.role, m.content) for m in settings.model.messages] == [
        ("system", 'Answer in "quotes".'),
        ("user", "Hé"),
    ]
