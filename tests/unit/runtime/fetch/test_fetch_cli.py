"""`slm-runtime pull`: JSON on stdout, the same record beside the model, exit codes per failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fetchtest_servers import FakeServer, model_bytes, sha

from slm_runtime.cli import main

DATA = model_bytes(200_000)


def _args(server: FakeServer, dest: Path, *extra: str) -> list[str]:
    return [
        "pull",
        f"{server.url}/m/tiny.gguf",
        "--dest",
        str(dest),
        "--progress",
        "none",
        "--read-timeout",
        "1",
        *extra,
    ]


def test_prints_result_and_writes_record(server: FakeServer, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.add("/m/tiny.gguf", DATA)
    output = dest.parent / "result.json"
    assert main([*_args(server, dest, "--sha256", sha(DATA), "--output", str(output))]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["digest"] == f"sha256:{sha(DATA)}"
    assert printed["sizeBytes"] == len(DATA)
    assert printed["format"] == "gguf"
    assert set(printed) == {"path", "source", "digest", "sizeBytes", "format", "metadata", "cached"}
    assert set(printed["metadata"]) == {"template", "system", "parameters", "license"}
    record = json.loads(Path(printed["path"] + ".slm.json").read_text())
    assert record == printed
    assert json.loads(output.read_text()) == printed


def test_termination_message_is_compact(server: FakeServer, dest: Path, capsys: pytest.CaptureFixture[str]) -> None:
    server.add("/m/tiny.gguf", DATA)
    log = dest.parent / "termination-log"
    assert main([*_args(server, dest, "--output", str(log), "--termination-log", str(log))]) == 0
    printed = json.loads(capsys.readouterr().out)
    message = json.loads(log.read_text())
    assert message == {key: value for key, value in printed.items() if key != "metadata"}


@pytest.mark.parametrize(
    ("setup", "extra", "code"),
    [
        ("none", (), 3),
        ("token", (), 4),
        ("corrupt", ("--sha256", sha(DATA)), 5),
        ("plain", ("--offline",), 6),
        ("plain", ("--sha256", "nothex"), 2),
        ("plain", ("--auth-env", "SLM_TEST_UNSET_VARIABLE"), 2),
    ],
)
def test_exit_codes(
    server: FakeServer, dest: Path, capsys: pytest.CaptureFixture[str], setup: str, extra: tuple[str, ...], code: int
) -> None:
    if setup != "none":
        server.add("/m/tiny.gguf", DATA, token="t" if setup == "token" else None, corrupt=setup == "corrupt")
    log = dest.parent / "termination-log"
    assert main([*_args(server, dest, *extra), "--termination-log", str(log)]) == code
    assert capsys.readouterr().out == ""
    assert log.read_text().strip()


def test_bad_source_is_a_usage_error(dest: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert main(["pull", "qwen2.5:3b", "--dest", str(dest)]) == 2
    assert "has no scheme" in caplog.text


def test_unwritable_cache_is_reported(server: FakeServer, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server.add("/m/tiny.gguf", DATA)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    assert main(_args(server, blocker)) == 1
    assert "not-a-folder" in caplog.text
