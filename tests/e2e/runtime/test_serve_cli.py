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
