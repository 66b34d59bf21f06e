#!/usr/bin/env python3
"""Gateway overhead: the runtime reached through slm-gateway against the same runtime reached directly, same run.

    .venv/bin/python bench/gateway.py [--model PATH] [--runs 7] [--pairs 2] [--requests 8] [--clients 1 8]
        [--tokens 64] [--threads 2] [--context-length 2048] [--parallel 8] [--settle 5] [--foreign 0.1]
        [--redo-budget 24] [--out .state/bench/gateway.json]

One ``slm-runtime serve`` (the GGUF, Gemma 3 270M Q4_K_M by default, ``--parallel P --threads T --context-length
C``, as bench/concurrency.py starts it) and, in front of it, slm-gateway's app (``slm_gateway.app.create_app``)
served by uvicorn in its own process (bench/_gateway_static.py): no Kubernetes, a static catalog feed with one
model ``bench/gemma3`` in phase Ready and one ready endpoint, the runtime's loopback port. Both paths are warmed
up with one wave of P clients (not counted).

A wave is N clients that start together, each streaming one ``POST /v1/completions`` of --tokens tokens (greedy;
``model`` is ``bench`` directly, ``bench/gemma3`` through the gateway, which rewrites it). Every prompt carries its
own number of the same width, so no request reuses another's prompt cache and both paths evaluate prompts of
the same length. Each run does, for every N, max(--pairs, ceil(--requests / N)) pairs of waves (so that each path
has at least --requests requests per run: a TTFT p50 of one client is not one sample), direct and gateway
interleaved in ABBA order (direct, gateway, gateway, direct ... with the first path alternating from run to run),
so drift of the machine falls on both paths alike. Before each wave the script waits up to --settle seconds for a
quiet machine (less than --foreign of the CPUs busy); a wave during which other work used more than --foreign of
the CPUs is redone with fresh prompts (at most --redo-budget waves in all). The default 0.1 is stricter than the
other benchmarks' 0.2: on two cores a fifth of the CPUs taken by other work slows a wave by 20% or more, far more
than the 3% this figure looks for.

Figures per N, in .state/bench/gateway.json:

- ``paths.<direct|gateway>``: aggregate tokens/s per run (all tokens of the run's waves / their wall time), median
  [min-max] over runs; TTFT and inter-token latency p50/p99 pooled over all requests;
- ``ttft_p50_diff_ms``: per run, the gateway's TTFT p50 minus the direct one (both over that run's requests);
  ``ttft_p50_diff_ms_pooled``: the same over all runs' requests at once;
- ``tok_s_ratio``: per run, the gateway's aggregate tokens/s divided by the direct one;
- ``by_pair``: the same two comparisons per pair of adjacent waves (TTFT p50 of each wave), median [min-max] over
  all pairs of all runs: seconds apart, the two waves of a pair see the least drift of a shared machine;
- ``gateway_cpu_ms_per_request``: CPU time of the gateway process (user + system from /proc, in clock ticks of
  usually 10 ms) during its waves, divided by their requests, per run; ``gateway_cpu_us_per_token``: the same
  over all runs, per streamed token;
- ``meets_target``: issue 16's figure, on the medians: TTFT p50 difference <= 2 ms and tokens/s ratio >= 0.97.

The gateway shares the machine's cores with the runtime and the load generator (a pod would run elsewhere), so
its CPU time is taken from the runtime's in this benchmark: the overhead measured is an upper bound of what a
client sees when the gateway has a core of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import Server, Timing
from concurrency import make_server

log = logging.getLogger("bench.gateway")

PATHS = ("direct", "gateway")
NAMESPACE, NAME, SERVED = "bench", "gemma3", "bench"
MODEL_ID = f"{NAMESPACE}/{NAME}"
TARGET = {"ttft_p50_diff_ms_max": 2.0, "tok_s_ratio_min": 0.97}
TICK = os.sysconf("SC_CLK_TCK")

_numbers = itertools.count(100_000)
"""Prompt numbers: unique over the whole benchmark, all of six digits (the same prompt length everywhere)."""


@dataclass
class Wave:
    """One wave on one path: its requests, wall time, and the gateway process's CPU ticks meanwhile."""

    timings: list[Timing]
    wall: float
    gateway_ticks: int

    @property
    def tokens(self) -> int:
        return sum(t.tokens for t in self.timings)


Waves = dict[tuple[str, int], list[list[Wave]]]
"""(path, clients) -> per run, the waves kept (one per pair; fewer when some were abandoned)."""
Pairs = dict[int, list[tuple[Wave, Wave]]]
"""clients -> every pair of adjacent (direct, gateway) waves of all runs where both completed."""


def bodies(path: str, clients: int, tokens: int) -> list[dict[str, Any]]:
    model = MODEL_ID if path == "gateway" else SERVED
    return [
        benchlib.completion_body(benchlib.prompt(next(_numbers)), tokens) | {"model": model} for _ in range(clients)
    ]


def gateway_server(upstream: Server) -> Server:
    port = benchlib.free_port()
    command = [sys.executable, str(Path(__file__).with_name("_gateway_static.py")), "--port", str(port)]
    command += ["--upstream-port", str(upstream.port), "--namespace", NAMESPACE, "--name", NAME]
    command += ["--served-name", SERVED]
    return Server("slm-gateway", command, "/readyz", port)


def ticks(server: Server) -> int:
    """CPU jiffies of a server's process tree so far."""
    if server.process is None:
        return 0
    return sum(benchlib._process_ticks(pid) for pid in benchlib._tree(server.process.pid))


def one_wave(url: str, path: str, clients: int, gateway: Server, args: argparse.Namespace) -> Wave:
    before = ticks(gateway)
    timings, wall = asyncio.run(benchlib.wave(url, bodies(path, clients, args.tokens), args.wave_timeout))
    wave = Wave(timings, wall, ticks(gateway) - before)
    log.info(
        "%-7s %d client(s): %4d tokens in %5.2fs = %6.1f tok/s, TTFT p50 %5.1f ms, gateway CPU %3d ms",
        path,
        clients,
        wave.tokens,
        wall,
        wave.tokens / wall,
        benchlib.percentile([t.ttft for t in timings], 50) * 1000,
        wave.gateway_ticks * 1000 // TICK,
    )
    return wave


def quiet(max_wait: float, share: float) -> None:
    """Wait up to ``max_wait`` seconds until the CPUs are busy less than ``share`` (our servers idle between waves,
    so what is busy is other work): stricter than benchlib.settle's 30%, as --foreign is."""
    deadline = time.monotonic() + max_wait
    while benchlib.cpu_busy() > share and time.monotonic() < deadline:
        pass


def clean_wave(
    url: str, path: str, clients: int, gateway: Server, args: argparse.Namespace, noise: benchlib.Clean[Wave]
) -> Wave | None:
    """One wave, redone with fresh prompts (twice at most) while other work used more than --foreign of the CPUs
    during it (or it was abandoned) and the budget of redone waves lasts; the least disturbed completed attempt."""
    attempts: list[tuple[float, Wave]] = []
    for _ in range(3):
        quiet(args.settle, args.foreign)
        measure = functools.partial(one_wave, url, path, clients, gateway, args)
        wave, share = benchlib.measured(measure, 0)
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


def order(run: int, pair: int) -> tuple[str, ...]:
    """ABBA: direct first in even pairs of odd runs, and the other way round."""
    return PATHS if (run + pair) % 2 else PATHS[::-1]


def pairs(args: argparse.Namespace, clients: int) -> int:
    """Wave pairs per run at ``clients``: at least --pairs, and at least --requests requests per path."""
    return max(args.pairs, math.ceil(args.requests / clients))


def sweep(urls: dict[str, str], gateway: Server, args: argparse.Namespace) -> tuple[Waves, Pairs, benchlib.Clean[Wave]]:
    waves: Waves = {(path, n): [] for path in PATHS for n in args.clients}
    adjacent: Pairs = {n: [] for n in args.clients}
    noise: benchlib.Clean[Wave] = benchlib.Clean()
    for run in range(1, args.runs + 1):
        log.info("run %d of %d", run, args.runs)
        for clients in args.clients:
            for path in PATHS:
                waves[(path, clients)].append([])
            for pair in range(pairs(args, clients)):
                done: dict[str, Wave] = {}
                for path in order(run, pair):
                    wave = clean_wave(urls[path], path, clients, gateway, args, noise)
                    if wave is not None:
                        waves[(path, clients)][-1].append(wave)
                        done[path] = wave
                if len(done) == len(PATHS):
                    adjacent[clients].append((done["direct"], done["gateway"]))
    return waves, adjacent, noise


# --- figures -------------------------------------------------------------------------------------------------


def _p50_ms(timings: Sequence[Timing]) -> float:
    return benchlib.percentile([t.ttft for t in timings], 50) * 1000


def _percentiles(values: list[float]) -> dict[str, float | int]:
    return {
        "p50": round(benchlib.percentile(values, 50) * 1000, 1),
        "p99": round(benchlib.percentile(values, 99) * 1000, 1),
        "n": len(values),
    }


def _tok_s(run: list[Wave]) -> float | None:
    wall = sum(w.wall for w in run)
    return sum(w.tokens for w in run) / wall if run and wall else None


def path_cell(runs: list[list[Wave]], tokens: int) -> dict[str, Any]:
    timings = [t for run in runs for wave in run for t in wave.timings]
    by_run = [_tok_s(run) for run in runs]
    return {
        "tok_s": benchlib.spread([x for x in by_run if x is not None], 1),
        "tok_s_by_run": [None if x is None else round(x, 2) for x in by_run],
        "ttft_ms": _percentiles([t.ttft for t in timings]),
        "itl_ms": _percentiles([gap for t in timings for gap in t.itls]),
        "ttft_p50_ms_by_run": [round(_p50_ms([t for w in run for t in w.timings]), 1) if run else None for run in runs],
        "waves": sum(len(run) for run in runs),
        "short_requests": sum(t.tokens < tokens for t in timings),
    }


def by_pair(adjacent: list[tuple[Wave, Wave]]) -> dict[str, Any]:
    """The comparisons per pair of adjacent waves (seconds apart: the least drift between the two paths)."""
    return {
        "ttft_p50_diff_ms": benchlib.spread([_p50_ms(g.timings) - _p50_ms(d.timings) for d, g in adjacent], 2),
        "tok_s_ratio": benchlib.spread([benchlib.ratio(g.tokens / g.wall, d.tokens / d.wall) for d, g in adjacent], 3),
    }


def compare(direct: list[list[Wave]], gateway: list[list[Wave]]) -> dict[str, Any]:
    """Per-run comparisons of the gateway against the direct path at one client count."""
    both = [(d, g) for d, g in zip(direct, gateway, strict=True) if d and g]
    diffs = [_p50_ms([t for w in g for t in w.timings]) - _p50_ms([t for w in d for t in w.timings]) for d, g in both]
    ratios = [benchlib.ratio(_tok_s(g) or 0.0, _tok_s(d) or 0.0) for d, g in both]
    cpu = [1000 * sum(w.gateway_ticks for w in g) / TICK / sum(len(w.timings) for w in g) for _, g in both]
    pooled = _p50_ms([t for _, g in both for w in g for t in w.timings]) - _p50_ms(
        [t for d, _ in both for w in d for t in w.timings]
    )
    gateway_tokens = sum(w.tokens for _, g in both for w in g)
    gateway_ticks = sum(w.gateway_ticks for _, g in both for w in g)
    diff, ratio = benchlib.spread(diffs, 2), benchlib.spread(ratios, 3)
    return {
        "ttft_p50_diff_ms": diff,
        "ttft_p50_diff_ms_pooled": round(pooled, 2),
        "tok_s_ratio": ratio,
        "gateway_cpu_ms_per_request": benchlib.spread(cpu, 1),
        "gateway_cpu_us_per_token": round(1e6 * gateway_ticks / TICK / gateway_tokens, 1) if gateway_tokens else None,
        "meets_target": bool(
            both and diff["median"] <= TARGET["ttft_p50_diff_ms_max"] and ratio["median"] >= TARGET["tok_s_ratio_min"]
        ),
    }


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    runtime = make_server("slm-runtime", args, model)
    gateway = gateway_server(runtime)
    started: list[Server] = []
    memory: dict[str, Any] = {}
    try:
        for server in (runtime, gateway):
            started.append(server)
            server.start()
            memory[server.name] = {"after_load": server.rss()}
        urls = {"direct": runtime.url, "gateway": gateway.url}
        for path in PATHS:  # warm-up, not counted
            asyncio.run(benchlib.wave(urls[path], bodies(path, args.parallel, args.tokens), args.wave_timeout * 3))
        waves, adjacent, noise = sweep(urls, gateway, args)
        for server in started:
            memory[server.name]["after_sweep"] = server.rss()
    finally:
        for server in reversed(started):
            server.stop()
    points: dict[str, Any] = {}
    for n in args.clients:
        points[str(n)] = {
            "paths": {path: path_cell(waves[(path, n)], args.tokens) for path in PATHS},
            **compare(waves[("direct", n)], waves[("gateway", n)]),
            "by_pair": by_pair(adjacent[n]),
        }
    return {"model_id": MODEL_ID, "target": TARGET, "points": points, "memory_mib": memory, "noise": noise.noise()}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--pairs", type=int, default=2, help="least direct/gateway wave pairs per client count and run")
    parser.add_argument("--requests", type=int, default=8, help="least requests per path, client count and run")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048, help="tokens per sequence (slot)")
    parser.add_argument("--parallel", type=int, default=8, help="the runtime's slots")
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.1, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--redo-budget", type=int, default=24, help="most waves redone in the whole benchmark")
    parser.add_argument("--wave-timeout", type=float, default=60, help="seconds before a wave is abandoned")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "gateway.json")
    return parser.parse_args()


def summary_line(result: dict[str, Any], clients: int) -> str:
    cell = result["points"][str(clients)]
    d, g = cell["paths"]["direct"], cell["paths"]["gateway"]
    diff, ratio, cpu = cell["ttft_p50_diff_ms"], cell["tok_s_ratio"], cell["gateway_cpu_ms_per_request"]
    pair_diff, pair_ratio = cell["by_pair"]["ttft_p50_diff_ms"], cell["by_pair"]["tok_s_ratio"]
    return (
        f"{clients} client(s): TTFT p50 direct {d['ttft_ms']['p50']:.1f} ms, gateway {g['ttft_ms']['p50']:.1f} ms, "
        f"difference per run {diff['median']:+.2f} ms [{diff['min']:+.2f}..{diff['max']:+.2f}] (pooled "
        f"{cell['ttft_p50_diff_ms_pooled']:+.2f}); tok/s direct "
        f"{d['tok_s']['median']:.1f}, gateway {g['tok_s']['median']:.1f}, ratio {ratio['median']:.3f} "
        f"[{ratio['min']:.3f}..{ratio['max']:.3f}]; by pair of waves: difference {pair_diff['median']:+.2f} ms, "
        f"ratio {pair_ratio['median']:.3f} ({pair_ratio['n']} pairs); gateway CPU {cpu['median']:.1f} ms/request; "
        f"target {'met' if cell['meets_target'] else 'NOT met'}"
    )


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model")}
    result = benchlib.header("gateway", params | {"model": model.name})
    try:
        result |= measure(args, model)
    except (RuntimeError, httpx.HTTPError, benchlib.TooSlowError) as error:
        log.error("gateway benchmark failed: %s", error)
        return 1
    benchlib.finish(result, args.out)
    for clients in args.clients:
        print(summary_line(result, clients))
    return 0


if __name__ == "__main__":
    sys.exit(main())
