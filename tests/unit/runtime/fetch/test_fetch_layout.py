"""Cache layout and settings: pure functions."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_runtime.fetch import FetchSettings, default_dest
from slm_runtime.fetch.digest import normalize_sha256
from slm_runtime.fetch.layout import cache_path, lock_path
from slm_runtime.source import parse_source

ROOT = Path("/models")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("ollama://qwen2.5:0.5b", "ollama/library/qwen2.5/0.5b/model.gguf"),
        ("ollama://team/tiny", "ollama/team/tiny/latest/model.gguf"),
        ("hf://org/repo/gguf/m.gguf", "hf/org/repo/main/gguf/m.gguf"),
        ("hf://org/repo/onnx/cpu/@v2", "hf/org/repo/v2/onnx/cpu"),
        ("https://models.example.com:8443/a/m.gguf?sig=1", "https/models.example.com_8443/a/m.gguf"),
        ("https://evil.example.com/../../etc/passwd", "https/evil.example.com/etc/passwd"),
        ("file:///srv/m.gguf", "file/srv/m.gguf"),
        ("pvc://claim/dir/m.gguf", "pvc/claim/dir/m.gguf"),
    ],
)
def test_cache_path(source: str, expected: str) -> None:
    assert cache_path(parse_source(source), ROOT) == ROOT / expected


def test_lock_sits_beside_the_model() -> None:
    assert lock_path(ROOT / "a" / "m.gguf") == ROOT / "a" / "m.gguf.lock"


def test_settings_from_environment_with_overrides(tmp_path: Path) -> None:
    env = {"HUGGING_FACE_HUB_TOKEN": "old", "HF_TOKEN": "new", "SLM_OLLAMA_REGISTRY": "http://mirror:5000"}
    settings = FetchSettings.from_env(env, pvc_root=tmp_path, read_timeout=None)
    assert settings.hf_token is not None and settings.hf_token.get_secret_value() == "new"
    assert settings.ollama_registry == "http://mirror:5000"
    assert settings.hf_endpoint == "https://huggingface.co"
    assert settings.pvc_root == tmp_path
    assert settings.read_timeout == 60.0
    assert "new" not in repr(settings)
    assert default_dest({"SLM_CACHE_HOME": str(tmp_path)}) == tmp_path / "models"


def test_normalize_sha256() -> None:
    hexdigest = "ab" * 32
    assert normalize_sha256(f"sha256:{hexdigest.upper()}") == hexdigest
    assert normalize_sha256(f"sha256-{hexdigest}") == hexdigest
    with pytest.raises(ValueError, match="64 hex characters"):
        normalize_sha256("sha256:abc")
