"""The local commands without a model: pull, show (--env, --modelfile), serve's refusals, run's errors."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from slm_operator.cli import build_parser, main

LOCAL_COMMANDS = {"serve", "run", "pull", "list", "ls", "rm", "ps", "show", "import", "bench"}
NOBODY = "http://127.0.0.1:9"  # discard port: nothing serves there


def test_every_local_command_is_registered() -> None:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert choices is not None and set(choices) >= LOCAL_COMMANDS


def test_pull_a_manifest_model_then_show_it(
    manifest: Path, cache: Path, fake_gguf: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["pull", str(manifest), "--cache", str(cache), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["path"] == str(fake_gguf) and record["format"] == "gguf"
    assert main(["show", str(manifest), "--cache", str(cache), "--url", NOBODY]) == 0
    shown = capsys.readouterr().out
    assert "name           tiny:1b" in shown and f"digest         {record['digest']}" in shown
    assert "contextLength    512" in shown and "Be brief." in shown


def test_show_env_is_the_rendered_runtime_environment(
    manifest: Path, cache: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["show", str(manifest), "--env", "--cache", str(cache)]) == 0
    env = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert json.loads(env["SLM_MODEL_NAME"]) == "tiny:1b"
    assert json.loads(env["SLM_HOST"]) == "127.0.0.1"
    assert json.loads(env["SLM_STOP"]) == '["</s>"]'
    assert json.loads(env["SLM_CONTEXT_LENGTH"]) == "512"


def test_show_modelfile(manifest: Path, cache: Path, fake_gguf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", str(manifest), "--modelfile", "--cache", str(cache), "--url", NOBODY]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"FROM file://{fake_gguf}",
        "SYSTEM Be brief.",
        "PARAMETER temperature 0.2",
        "PARAMETER top_k 7",
        "PARAMETER num_ctx 512",
        "PARAMETER stop </s>",
        "PARAMETER num_thread 3",
        "PARAMETER num_gpu -1",
        "MESSAGE user Hello",
        "MESSAGE assistant Hi!",
    ]


def test_serve_refuses_an_invalid_manifest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: slm-operator.io/v1alpha1\nkind: SLMDeployment\nmetadata: {name: x}\nspec: {modle: {}}\n"
    )
    assert main(["serve", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: invalid" in err and "unknown field 'modle'; did you mean 'model'?" in err


def test_serve_refuses_a_busy_port(manifest: Path, cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(manifest), "--port", str(port), "--cache", str(cache)]) == 1
    assert f"port {port} is in use" in capsys.readouterr().err


def test_run_of_an_unknown_model_says_how_to_get_one(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "nosuchmodel", "hi", "--cache", str(cache), "--url", NOBODY]) == 1
    err = capsys.readouterr().err
    assert "'nosuchmodel' is not a file, a model source or a model in the cache" in err
    assert "`slm pull` it first" in err


def test_ps_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--url", NOBODY]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


def test_served_parameters_text_keeps_multi_line_stops() -> None:
    from slm_operator.cli.local_models import _parameter_pairs

    text = 'temperature 0.7\nstop "<end_of_turn>"\nstop "\nUser:"\nnum_ctx 2048'
    assert _parameter_pairs(text) == [
        ("temperature", "0.7"),
        ("stop", '"<end_of_turn>"'),
        ("stop", '"\\nUser:"'),
        ("num_ctx", "2048"),
    ]


def test_pull_off_a_terminal_reports_progress_in_log_lines(
    manifest: Path, cache: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    assert main(["pull", str(manifest), "--cache", str(cache)]) == 0
    assert capsys.readouterr().out.startswith(f"file://{manifest.parent}/weights/tiny.gguf: pulled, 1 KB, sha256:")
    done = [r.getMessage() for r in caplog.records if r.name == "slm_operator.pull"]
    assert len(done) == 1 and done[0].startswith("tiny.gguf: done, 100% 1.0 KiB/1.0 KiB"), done
