"""The enterprise-assistant Modelfile imported with `slm import`, validated, served and stopped with Ctrl-C.

FROM is swapped to the Gemma package (no registry access in tests); every other line is the seed's.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import ollama
import pytest
import yaml
from local_e2e import GEMMA_SOURCE, REPO, SlmServe, slm_command

pytestmark = pytest.mark.model

MODELFILE = REPO / "tests" / "unit" / "operator" / "local" / "enterprise-assistant.Modelfile"


def test_imported_modelfile_validates_and_serves(tmp_path: Path) -> None:
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(MODELFILE.read_text().replace("FROM qwen2.5:3b", f"FROM {GEMMA_SOURCE}"))
    manifest = tmp_path / "assistant.yaml"
    imported = subprocess.run(
        slm_command("import", str(modelfile), "--name", "assistant", "-o", str(manifest)),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert imported.returncode == 0, imported.stderr
    document = yaml.safe_load(manifest.read_text())
    assert document["spec"]["hardware"] == {"accelerator": "nvidia-gpu", "fallback": ["cpu"]}
    validated = subprocess.run(
        slm_command("validate", str(manifest)), capture_output=True, text=True, timeout=60, check=False
    )
    assert validated.returncode == 0 and validated.stdout == f"{manifest}: valid (assistant)\n"

    server = SlmServe(manifest)
    try:
        server.wait_ready()
        client = ollama.Client(host=server.url)
        [listed] = client.list().models
        name = listed.model
        assert name is not None
        parameters = (client.show(name).parameters or "").splitlines()
        assert "temperature 0.3" in parameters and "top_p 0.85" in parameters and "num_ctx 8192" in parameters
        # the client's ShowResponse has no `system` field: read the raw answer
        shown = httpx.post(server.url + "/api/show", json={"model": name}, timeout=30).json()
        assert shown["system"].startswith("You are an enterprise assistant for Contoso.")
        [running] = httpx.get(server.url + "/api/ps", timeout=30).json()["models"]
        assert running["context_length"] == 8192
        reply = client.chat(
            model=name,
            messages=[{"role": "user", "content": "Who do you work for?"}],
            options={"temperature": 0, "num_predict": 24},
        )
        assert reply.message.content.strip()
    finally:
        output = server.stop()
    assert server.process.returncode == 0, output
    # num_gpu asked for a GPU; this machine's llama.cpp has none, so the cpu fallback tier serves it
    assert "(sha256:a5fd3b62230a, cpu)" in output
    assert "loaded in" in output and output.rstrip().endswith("Stopped.")
