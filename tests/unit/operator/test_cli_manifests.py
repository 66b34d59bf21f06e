"""`slm validate`, `slm crd` and `slm version` as a user runs them: real processes, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from slm_operator.crd import crd_yaml

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def slm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slm_operator.cli", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_every_example_validates() -> None:
    assert len(EXAMPLES) >= 4
    result = slm("validate", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid (") == len(EXAMPLES)


def test_invalid_manifest_prints_each_error_with_its_path_and_exits_1(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "slm-operator.io/v1alpha1",
                "kind": "SLMDeployment",
                "metadata": {"name": "bad"},
                "spec": {
                    "model": {"source": "ollama://qwen2.5:3b"},
                    "hardware": {"accelerator": "nvidia-gpu", "fallback": ["cpu", "tpu"]},
                    "autoscaling": {"minReplicas": 3, "maxReplicas": 1},
                    "replica": 2,
                },
            }
        )
    )
    result = slm("validate", str(bad), str(EXAMPLES[0]))
    assert result.returncode == 1
    assert "spec.hardware.fallback[1]: 'tpu' is not one of cpu, nvidia-gpu, amd-gpu, intel-gpu, npu" in result.stderr
    assert "spec.autoscaling: minReplicas (3) must be less than or equal to maxReplicas (1)" in result.stderr
    assert "spec.replica: unknown field 'replica'; did you mean 'replicas'?" in result.stderr
    assert f"{EXAMPLES[0]}: valid" in result.stdout  # the good file is still checked


def test_multi_document_files_name_the_document(tmp_path: Path) -> None:
    good = EXAMPLES[0].read_text()
    bad = good.replace("temperature: 0.7", "temperature: 7")
    path = tmp_path / "two.yaml"
    path.write_text(good + "\n---\n" + bad)
    result = slm("validate", str(path))
    assert result.returncode == 1
    assert "(document 2) spec.parameters.temperature: 7 is out of range" in result.stderr


def test_yaml_syntax_errors_and_missing_files_fail_clearly(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("spec: [unclosed\n")
    result = slm("validate", str(broken), str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert "not valid YAML" in result.stderr and "absent.yaml: no such file" in result.stderr


def test_crd_command_prints_and_writes_the_generated_crd(tmp_path: Path) -> None:
    printed = slm("crd")
    assert printed.returncode == 0 and printed.stdout == crd_yaml()
    target = tmp_path / "out" / "crd.yaml"
    assert slm("crd", "--write", str(target)).returncode == 0
    assert target.read_text() == crd_yaml()


def test_version() -> None:
    result = slm("version")
    assert result.returncode == 0 and result.stdout.startswith("slm ")
