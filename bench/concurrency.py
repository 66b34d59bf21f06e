#!/usr/bin/env python3
"""Concurrency sweep: our runtime against llama-cpp-python's server and llama.cpp's llama-server, 1-16 clients.

    .venv/bin/python bench/concurrency.py [--model PATH] [--runs 3] [--clients 1 2 4 8 16] [--tokens 64]
        [--threads 2] [--context-length 2048] [--parallel 8] [--llama-server PATH] [--servers NAME ...]
        [--settle 5] [--foreign 0.2] [--redo-budget 12] [--out .state/bench/concurrency.json]

The servers run the same GGUF (Gemma 3 270M Q4_K_M by default) with the same thread count:

- ``slm-runtime``: ``python -m slm_runtime.cli serve --parallel P --threads T --context-length C`` (batch
  invariant, the default); ``slm-runtime-fast``: the same with ``--batch-invariant false``;
- ``llama-cpp-python``: ``python -m llama_cpp.server --n_threads T --n_threads_batch T --n_ctx C
  --interrupt_requests False`` (one generation at a time: requests queue instead of cutting the running one);
- ``llama-server``: ``llama-server -t T -c C*P --parallel P`` (C tokens per slot, continuous batching), built by
  hack/build-llama-server.sh from the llama.cpp that the pinned llama-cpp-python vendors; skipped when the binary
  is missing.

All are started, then loaded with one warm-up wave of P clients. A wave is N clients that start together, each
streaming one ``POST /v1/completions`` (same prompt text per client across servers, numbered so that no prompt
cache helps, greedy, --tokens new tokens). Each run sweeps every N over every server, servers in rotating
order, so noise is spread over all of them; before each wave the script waits up to --settle seconds for a quiet
machine, and a wave during which other work used more than --foreign of the CPUs is redone with fresh prompts
(at most --redo-budget waves in all; ``noise`` records the share per kept wave). Tokens are the SSE events that
carry text, counted the same way for every server (the usage block, where a server sends one, is kept as a
cross-check).

Figures per server and N, in .state/bench/concurrency.json:

- ``tok_s``: aggregate tokens/s of a wave (all tokens / wall time from the first request to the last token),
  median over runs with min and max;
- ``ttft_ms`` / ``itl_ms``: p50 and p99 of time to first token and of the gaps between tokens, pooled over all
  requests of all runs (``n`` says how many samples; with few samples p99 is close to the max);
- ``ratio_vs``: per run, our aggregate tokens/s divided by the other server's in the same run;
- ``same_text_as_slm_runtime``: share of requests whose text equals ours for the same prompt (informational:
  greedy output of a small model flips on tiny numeric differences between builds and batch shapes);
- ``short_requests``: requests that stopped before --tokens (EOS): their waves did less work than the others;
- ``memory_mib``: RSS of each server (process tree) after loading and after the sweep, anonymous and
  file-backed (the mmapped model) apart, next to the model file size.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import Server, Timing

log = logging.getLogger("bench.concurrency")

SERVERS = ("slm-runtime", "slm-runtime-fast", "llama-cpp-python", "llama-server")

Wave = tuple[list[Timing], float]
"""One wave: the timings of its requests and its wall time."""
Waves = dict[tuple[str, int], list[Wave | None]]
"""(server, clients) -> the wave of every run (None: abandoned, over --wave-timeout in every attempt)."""


def make_server(name: str, args: argparse.Namespace, model: Path) -> Server:
    port = benchlib.free_port()
    t, c, p = str(args.threads), args.context_length, args.parallel
    if name.startswith("slm-runtime"):
        command = [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve", "--model", str(model)]
        command += ["--port", str(port), "--model-name", "bench", "--parallel", str(p), "--threads", t]
        command += ["--context-length", str(c), "--temperature", "0", "--repeat-penalty", "1.0"]
        # The fast variant trades batch invariance for llama.cpp's repacked kernels and flash attention.
        command += ["--batch-invariant", "false" if name == "slm-runtime-fast" else "true"]
        # As llama-server's requests (cache_prompt false): no prompt cache, and no idle re-read of kept answers
        # taking CPU from the next server's wave.
        command += ["--prompt-cache", "false"]
        return Server(name, command, "/readyz", port)
    if name == "llama-cpp-python":
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--model_alias", "bench"]
        command += ["--n_threads", t, "--n_threads_batch", t, "--n_ctx", str(c), "--host", "127.0.0.1"]
        command += ["--port", str(port), "--interrupt_requests", "False"]  # queue, do not cut the running one
        return Server(name, command, "/v1/models", port)
    command = [str(args.llama_server), "-m", str(model), "-t", t, "-c", str(c * p), "--parallel", str(p)]
    command += ["--host", "127.0.0.1", "--port", str(port), "-a", "bench"]
    return Server(name, command, "/health", port)


def bodies(run: int, attempt: int, clients: int, tokens: int) -> list[dict[str, Any]]:
    """The wave's requests: prompt numbers unique per (run, attempt, clients, client), identical across servers."""
    first = ((run * 10 + attempt) * 100 + clients) * 100
    return [benchlib.completion_body(benchlib.prompt(first + i), tokens) for i in range(clients)]


def one_wave(server: Server, run: int, attempt: int, clients: int, args: argparse.Namespace) -> Wave:
    timings, wall = asyncio.run(
        benchlib.wave(server.url, bodies(run, attempt, clients, args.tokens), args.wave_timeout)
    )
    total = sum(t.tokens for t in timings)
    log.info(
        "run %d %-16s %d client(s): %4d tokens in %5.2fs = %6.1f tok/s, max TTFT %.0f ms",
        run,
        server.name,
        clients,
        total,
        wall,
        total / wall,
        max(t.ttft for t in timings) * 1000,
    )
    return timings, wall


def clean_wave(
    server: Server, run: int, clients: int, args: argparse.Namespace, noise: benchlib.Clean[Wave]
) -> Wave | None:
    """One wave, redone with fresh prompts (twice at most) while other work used more than --foreign of the CPUs
    during it (or it was abandoned) and the sweep's budget of redone waves lasts; the least disturbed completed
    attempt is kept, None when none completed."""
    attempts: list[tuple[float, Wave]] = []
    for attempt in range(3):
        wave, share = benchlib.measured(functools.partial(one_wave, server, run, attempt, clients, args), args.settle)
        if wave is not None:
            attempts.append((share, wave))
        if share <= args.foreign or noise.redone >= args.redo_budget:
            break
        noise.redone += 1
    if not attempts:
        return None
    share, wave = min(attempts, key=lambda a: a[0])
    noise.foreign.append(share)
    return wave


def sweep(servers: Sequence[Server], args: argparse.Namespace) -> tuple[Waves, benchlib.Clean[Wave]]:
    """Every run: every client count over every server, the server order rotating from run to run."""
    waves: Waves = {}
    noise: benchlib.Clean[Wave] = benchlib.Clean()
    for run in range(1, args.runs + 1):
        shift = run % len(servers)
        order = list(servers[shift:]) + list(servers[:shift])
        for clients in args.clients:
            for server in order:
                waves.setdefault((server.name, clients), []).append(clean_wave(server, run, clients, args, noise))
    return waves, noise


def _percentiles(values: list[float]) -> dict[str, float | int]:
    return {
        "p50": round(benchlib.percentile(values, 50) * 1000, 1),
        "p99": round(benchlib.percentile(values, 99) * 1000, 1),
        "n": len(values),
    }


def _tok_s(wave: Wave | None) -> float | None:
    return None if wave is None else round(sum(t.tokens for t in wave[0]) / wave[1], 2)


def point(waves: list[Wave | None], tokens: int) -> dict[str, Any]:
    """The figures of one (server, clients) cell over all runs."""
    results = [wave for wave in waves if wave is not None]
    timings = [t for wave_timings, _ in results for t in wave_timings]
    usage = [t.usage_tokens for t in timings if t.usage_tokens is not None]
    return {
        "tok_s": benchlib.spread([sum(t.tokens for t in ts) / wall for ts, wall in results], 1),
        "tok_s_by_run": [_tok_s(wave) for wave in waves],
        "abandoned_runs": len(waves) - len(results),
        "ttft_ms": _percentiles([t.ttft for t in timings]),
        "itl_ms": _percentiles([gap for t in timings for gap in t.itls]),
        "ttft_p50_ms_by_run": benchlib.spread(
            [benchlib.percentile([t.ttft for t in ts], 50) * 1000 for ts, _ in results], 1
        ),
        "tokens_per_request": benchlib.spread([t.tokens for t in timings], 0),
        "short_requests": sum(t.tokens < tokens for t in timings),
        "usage_tokens_total": sum(usage) if usage else None,
        "chunk_tokens_total": sum(t.tokens for t in timings),
    }


def ratios(points: dict[str, dict[int, dict[str, Any]]], clients: Sequence[int]) -> dict[str, dict[int, Any]]:
    """Per run, slm-runtime's aggregate tokens/s over each other server's (same run, same client count)."""
    ours = points.get("slm-runtime")
    out: dict[str, dict[int, Any]] = {}
    for name, cells in points.items():
        if name == "slm-runtime" or ours is None:
            continue
        out[name] = {}
        for n in clients:
            pairs = zip(ours[n]["tok_s_by_run"], cells[n]["tok_s_by_run"], strict=True)
            out[name][n] = benchlib.spread([benchlib.ratio(a, b) for a, b in pairs if a is not None and b is not None])
    return out


def agreement(waves: Waves, names: Sequence[str]) -> dict[str, float]:
    """Share of requests whose text equals slm-runtime's for the same prompt (greedy: ideally all)."""

    def texts(name: str) -> dict[str, str]:
        return {
            t.prompt: t.text
            for (server, _), results in waves.items()
            if server == name
            for wave in results
            if wave is not None
            for t in wave[0]
        }

    ours = texts("slm-runtime")
    out: dict[str, float] = {}
    for name in names:
        if name == "slm-runtime":
            continue
        theirs = texts(name)
        common = [p for p in theirs if p in ours]
        out[name] = round(sum(theirs[p] == ours[p] for p in common) / len(common), 3) if common else math.nan
    return out


def start_all(servers: list[Server], names: Sequence[str], args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Start each server into ``servers`` (so the caller stops whatever started), note its RSS, warm it up."""
    memory: dict[str, Any] = {}
    for name in names:
        server = make_server(name, args, model)
        servers.append(server)
        server.start()
        memory[name] = {"after_load": server.rss()}
        warm_up = benchlib.wave(server.url, bodies(0, 0, args.parallel, args.tokens), args.wave_timeout * 3)
        asyncio.run(warm_up)  # not counted
    return memory


def measure(args: argparse.Namespace, model: Path, names: Sequence[str]) -> dict[str, Any]:
    servers: list[Server] = []
    try:
        memory = start_all(servers, names, args, model)
        waves, noise = sweep(servers, args)
        for server in servers:
            memory[server.name]["after_sweep"] = server.rss()
    finally:
        for server in servers:
            server.stop()
    points = {name: {n: point(waves[(name, n)], args.tokens) for n in args.clients} for name in names}
    memory["model_file_mib"] = round(model.stat().st_size / 2**20, 1)
    return {
        "servers": list(names),
        "points": points,
        "ratio_vs": ratios(points, args.clients),
        "same_text_as_slm_runtime": agreement(waves, names),
        "memory_mib": memory,
        "noise": noise.noise(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048, help="tokens per sequence (slot)")
    parser.add_argument("--parallel", type=int, default=8, help="slots of slm-runtime and llama-server")
    parser.add_argument("--llama-server", type=Path, default=benchlib.llama_server_binary())
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--redo-budget", type=int, default=12, help="most waves redone in the whole sweep")
    parser.add_argument("--wave-timeout", type=float, default=60, help="seconds before a wave is abandoned")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "concurrency.json")
    return parser.parse_args()


def summary_line(result: dict[str, Any], clients: int) -> str:
    parts = []
    for name in result["servers"]:
        cell = result["points"][name][clients]
        parts.append(f"{name} {cell['tok_s']['median']:.1f} tok/s (TTFT p50 {cell['ttft_ms']['p50']:.0f} ms)")
    ratios_text = [f"/{name} {r[clients]['median']:.2f}" for name, r in result["ratio_vs"].items()]
    return f"{clients} client(s): " + ", ".join(parts) + (" | ours" + " ".join(ratios_text) if ratios_text else "")


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    names = list(args.servers)
    skipped = {}
    if "llama-server" in names and not args.llama_server.is_file():
        log.warning("llama-server skipped: %s is missing (hack/build-llama-server.sh builds it)", args.llama_server)
        names.remove("llama-server")
        skipped["llama-server"] = "binary not built (hack/build-llama-server.sh)"
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model", "llama_server", "servers")}
    result = benchlib.header("concurrency", params | {"model": model.name}) | {"skipped": skipped}
    try:
        result |= measure(args, model, names)
    except (RuntimeError, httpx.HTTPError, benchlib.TooSlowError) as error:
        log.error("concurrency benchmark failed: %s", error)
        return 1
    benchlib.finish(result, args.out)
    for clients in args.clients:
        print(summary_line(result, clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
