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
    assert settings.server.api_key is not None
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
