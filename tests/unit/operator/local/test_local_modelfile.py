"""Modelfile -> SLMDeployment: every instruction, the errors that name their line, and the way back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from slm_operator.api import Accelerator, load_manifest
from slm_operator.cli import main
from slm_operator.local.modelfile import (
    LICENSE_ANNOTATION,
    ModelfileError,
    import_modelfile,
    manifest_yaml,
    modelfile_resource,
    parse_modelfile,
    to_modelfile,
)

ENTERPRISE = Path(__file__).with_name("enterprise-assistant.Modelfile")


def test_enterprise_assistant_becomes_a_manifest() -> None:
    result = import_modelfile(ENTERPRISE.read_text())
    resource = result.resource()
    spec = resource.spec
    assert resource.metadata.name == "qwen2-5-3b"
    assert spec.model.source == "ollama://qwen2.5:3b"
    assert spec.model.served_name() == "qwen2.5:3b"
    assert spec.parameters is not None
    assert spec.parameters.temperature == 0.3
    assert spec.parameters.top_p == 0.85
    assert spec.parameters.context_length == 8192
    assert spec.parameters.num_thread == 8
    assert spec.hardware is not None
    assert spec.hardware.accelerator is Accelerator.NVIDIA_GPU
    assert spec.hardware.fallback == [Accelerator.CPU]
    assert spec.system == (
        "You are an enterprise assistant for Contoso.\n"
        "Answer concisely, cite internal policy names when relevant, and never reveal confidential data."
    )
    assert result.notes == []


def test_slm_import_writes_a_manifest_that_slm_validate_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "assistant.yaml"
    assert main(["import", str(ENTERPRISE), "--name", "assistant", "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Imported from enterprise-assistant.Modelfile by `slm import`.\n")
    document = yaml.safe_load(text)
    assert document["spec"]["parameters"] == {
        "temperature": 0.3,
        "topP": 0.85,
        "contextLength": 8192,
        "numThread": 8,
    }
    assert document["metadata"] == {"name": "assistant"}
    capsys.readouterr()
    assert main(["validate", str(out)]) == 0
    assert capsys.readouterr().out == f"{out}: valid (assistant)\n"


def test_slm_import_prints_to_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import", str(ENTERPRISE)]) == 0
    document = yaml.safe_load(capsys.readouterr().out)
    assert document["kind"] == "SLMDeployment" and document["spec"]["model"]["name"] == "qwen2.5:3b"


def test_every_instruction() -> None:
    text = '''
# comment
from ./models/tiny.gguf
PARAMETER stop "<|im_end|>"
PARAMETER stop <|endoftext|>
PARAMETER top_k 20
PARAMETER min_p 0.05
PARAMETER seed 42
PARAMETER num_predict 256
PARAMETER repeat_penalty 1.2
PARAMETER repeat_last_n -1
PARAMETER num_batch 128
PARAMETER num_gpu 0
PARAMETER mirostat 2
TEMPLATE """{{ if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ .Prompt }}"""
SYSTEM You are terse.
LICENSE """Apache License 2.0"""
LICENSE second part
MESSAGE user Is Paris in France?
MESSAGE assistant """Yes."""
REQUIRES 0.6.0
'''
    result = import_modelfile(text, name="tiny", base_dir=Path("/srv/work"))
    spec = result.resource().spec
    assert spec.model.source == "file:///srv/work/models/tiny.gguf"
    assert spec.parameters is not None
    assert spec.parameters.stop == ["<|im_end|>", "<|endoftext|>"]
    assert (spec.parameters.top_k, spec.parameters.min_p, spec.parameters.seed) == (20, 0.05, 42)
    assert (spec.parameters.num_predict, spec.parameters.repeat_penalty) == (256, 1.2)
    assert (spec.parameters.repeat_last_n, spec.parameters.num_batch) == (-1, 128)
    assert spec.hardware is not None and spec.hardware.accelerator is Accelerator.CPU
    assert spec.template == "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ .Prompt }}"
    assert spec.system == "You are terse."
    assert [(m.role, m.content) for m in spec.messages or []] == [
        ("user", "Is Paris in France?"),
        ("assistant", "Yes."),
    ]
    assert result.document["metadata"]["annotations"] == {LICENSE_ANNOTATION: "Apache License 2.0\nsecond part"}
    assert result.notes == [
        "line 14: PARAMETER mirostat dropped (no equivalent in the llama.cpp runtime)",
        "line 23: REQUIRES 0.6.0 ignored (it pins an Ollama version)",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("FROM llama3.2\nADAPTER ./lora.gguf\n", "line 2: ADAPTER is not supported"),
        ("FROM llama3.2\n\nPARAMETER flux 3\n", "line 3: unknown PARAMETER 'flux'"),
        ("FROM llama3.2\nPARAMETER temperature hot\n", "line 2: PARAMETER temperature hot: expected a number"),
        ("FROM llama3.2\nPARAMETER top_k 2.5\n", "line 2: PARAMETER top_k 2.5: expected a whole number"),
        ("FROM llama3.2\nPARAMETER top_p 3\n", "line 2: PARAMETER top_p 3: Input should be less than or equal to 1"),
        ("FROM llama3.2\nPARAMETER num_gpu all\n", "line 2: PARAMETER num_gpu all: expected a whole number"),
        ("FROM llama3.2\nPARAMETER seed\n", "line 2: PARAMETER seed needs a value"),
        ('FROM llama3.2\nSYSTEM """never\nclosed\n', 'line 2: a """ quoted value is never closed'),
        ('FROM llama3.2\nSYSTEM "open\n', "line 2: a quoted value is never closed"),
        ("FROM llama3.2\nMESSAGE tool hi\n", "line 2: MESSAGE role 'tool' is not one of system, user, assistant"),
        ("FROM llama3.2\nFROM qwen2.5\n", "line 2: FROM appears twice"),
        ("# only a comment\nSYSTEM hi\n", "line 1: no FROM instruction"),
        ("FROM llama3.2\nINSTRUCT hi\n", "line 2: unknown instruction 'INSTRUCT'"),
        ("FROM hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M\n", "line 1: FROM hf.co/bartowski"),
    ],
)
def test_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(ModelfileError) as caught:
        import_modelfile(text, name="x")
    assert str(caught.value).startswith(message), str(caught.value)


def test_cli_error_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM llama3.2\nSYSTEM hi\nADAPTER ./adapter.safetensors\n")
    assert main(["import", str(modelfile)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {modelfile}: line 3: ADAPTER is not supported")
    assert "merge the LoRA adapter" in err


def test_safetensors_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelfileError, match=re.escape("line 1: FROM ./weights: a folder of safetensors")):
        import_modelfile("FROM ./weights\n", base_dir=tmp_path)


def test_sources_pass_through_and_context_length_alias() -> None:
    spec = modelfile_resource("FROM hf://org/repo/m.gguf\nPARAMETER context_length 4096\n").spec
    assert spec.model.source == "hf://org/repo/m.gguf" and spec.model.name is None
    assert spec.parameters is not None and spec.parameters.context_length == 4096


def test_parse_keeps_lines_and_case_insensitive_keywords() -> None:
    items = parse_modelfile('from qwen2.5\n\nsystem """a\nb"""\nparameter stop "x y"\n')
    assert [(i.keyword, i.value, i.line) for i in items] == [
        ("FROM", "qwen2.5", 1),
        ("SYSTEM", "a\nb", 3),
        ("PARAMETER", "stop x y", 5),
    ]


def test_round_trip_through_show_modelfile(tmp_path: Path) -> None:
    original = import_modelfile(ENTERPRISE.read_text(), name="assistant")
    again = import_modelfile(to_modelfile(original.resource()), name="assistant")
    assert again.document == original.document


def test_manifest_yaml_loads_back(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(manifest_yaml(import_modelfile(ENTERPRISE.read_text(), name="a"), origin="Modelfile"))
    [resource] = load_manifest(path)
    assert resource.spec.model.source == "ollama://qwen2.5:3b"
