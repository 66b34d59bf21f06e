"""Fixtures for the local-mode unit tests: a fake GGUF file and a manifest serving it from file://."""

from __future__ import annotations

from pathlib import Path

import pytest

MANIFEST = """\
apiVersion: slm-operator.io/v1alpha1
kind: SLMDeployment
metadata: {{name: tiny}}
spec:
  model:
    source: file://{model}
    name: tiny:1b
  parameters: {{temperature: 0.2, topK: 7, contextLength: 512, numThread: 3, stop: ["</s>"]}}
  system: Be brief.
  messages:
    - {{role: user, content: Hello}}
    - {{role: assistant, content: Hi!}}
  hardware: {{accelerator: nvidia-gpu, fallback: [cpu]}}
  server: {{port: 12345, parallel: 2, maxQueue: 3}}
"""


@pytest.fixture
def fake_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "weights" / "tiny.gguf"
    path.parent.mkdir()
    path.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    return path


@pytest.fixture
def manifest(tmp_path: Path, fake_gguf: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(MANIFEST.format(model=fake_gguf))
    return path


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return tmp_path / "cache"
