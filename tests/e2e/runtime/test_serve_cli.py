"""`slm-runtime serve` as a process: flags and SLM_* variables, readiness, a generation, clean shutdown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from runtime_e2e import free_port

from slm_runtime.shutdown import MODEL_LOAD_FAILED

pytestmark = pytest.mark.model


def test_serve_command_with_env_and_metadata(gguf_path: Path, tmp_path: Path) -> None:
    metadata = tmp_path / "gemma.json"
    metadata.write_text(json.dumps({"system": "You are a test.", "parameters": {"temperature": 0, "num_ctx": 512}}))
    port = free_port()
    env = {**os.environ, "SLM_PORT": str(port), "SLM_API_KEY": "from-env", "SLM_MODEL_NAME": "tiny"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slm_runtime.cli",
            "serve",
            "--model",
            str(gguf_path),
            "--model-metadata",
            str(metadata),
            "--threads",
            "2",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, "serve exited early"
            time.sleep(0.1)
        headers = {"Authorization": "Bearer from-env"}
        shown = httpx.post(url + "/api/show", json={"model": "tiny"}, headers=headers, timeout=30).json()
        assert shown["system"] == "You are a test."
        assert "num_ctx 512" in shown["parameters"] and "temperature 0" in shown["parameters"]
        response = httpx.post(
            url + "/api/generate",
            json={"model": "tiny", "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 200 and response.json()["eval_count"] == 2
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "model tiny ready" in output
    assert "path=/api/generate status=200" in output and "completion_tokens=2" in output
    assert "Hi" not in output.split("path=/api/generate")[1].splitlines()[0]  # no prompt text by default


def test_serve_refuses_bad_settings_with_the_flag_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "slm_runtime.cli", "serve", "--model", str(tmp_path / "x.gguf"), "--parallel", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--parallel / SLM_PARALLEL" in result.stderr


def _start_serve(model: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "slm_runtime.cli", "serve", "--model", str(model), "--port", str(port), *extra],
        env={**os.environ, "SLM_MODEL_NAME": "tiny"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_ready(url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None, f"serve exited early: {process.communicate()[0][-2000:]}"
        time.sleep(0.1)
    raise AssertionError("serve not ready in 60 s")


def test_sigterm_finishes_the_generation_in_flight_then_exits(gguf_path: Path) -> None:
    """A rollout's SIGTERM: the streaming request in flight gets every token and its final chunk; no new
    connection is accepted; the process exits 0 within the drain timeout."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = _start_serve(gguf_path, port, "--threads", "2", "--drain-timeout", "60")
    try:
        _wait_ready(url, process)
        body = {"model": "tiny", "prompt": "Count to fifty:", "options": {"num_predict": 48, "temperature": 0}}
        chunks: list[dict[str, object]] = []
        with httpx.stream("POST", url + "/api/generate", json=body, timeout=120) as response:
            lines = response.iter_lines()
            chunks.append(json.loads(next(lines)))  # the generation is running
            process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            with pytest.raises(httpx.TransportError):  # no longer listening: the endpoint is gone
                httpx.get(url + "/readyz", timeout=2)
            chunks += [json.loads(line) for line in lines if line]
        final = chunks[-1]
        assert final["done"] is True and final["done_reason"] == "length" and final["eval_count"] == 48
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, output[-2000:]
    assert "not ready, admitting no new requests" in output


def test_a_model_that_cannot_load_exits_with_its_code_and_reason(tmp_path: Path) -> None:
    """Not a crash-looping 'not ready': serve exits with MODEL_LOAD_FAILED's code, the reason in the
    termination log the kubelet reads."""
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a GGUF file" * 100)
    termination_log = tmp_path / "termination-log"
    process = _start_serve(junk, free_port(), "--termination-log", str(termination_log))
    output, _ = process.communicate(timeout=120)
    assert process.returncode == MODEL_LOAD_FAILED.exit_code, output[-2000:]
    message = termination_log.read_text()
    assert message.startswith(f"{MODEL_LOAD_FAILED.reason}: loading model tiny failed"), message
