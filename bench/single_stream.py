#!/usr/bin/env python3
"""Single stream: our runtime over HTTP against raw llama-cpp-python in-process, same model, same llama.cpp.

    .venv/bin/python bench/single_stream.py [--model PATH] [--runs 7] [--tokens 64] [--threads 2]
                                            [--context-length 2048] [--prompt-tokens 8] [--settle 5]
                                            [--foreign 0.2] [--out .state/bench/single_stream.json]

Baseline: ``llama_cpp.Llama.create_completion(stream=True)`` in this process (no server, no engine of ours).
Ours: ``slm-runtime serve`` in a child process, a streaming ``POST /v1/completions`` over loopback HTTP.
Both: Gemma 3 270M Q4_K_M by default, the same prompt text (numbered per run so that no prompt cache helps;
run k sends the same text to both), greedy (temperature 0, repeat_penalty 1.0), --threads threads, exactly
--tokens new tokens asked for. Two prompts: the long default one (a story's opening, the figures at the top of
the JSON), and a short one of --prompt-tokens tokens (the first tokens of the same text, its ``short_prompt``
section; 0 leaves it out), where prompt evaluation is brief and what the server adds before the first token
shows. Runs alternate between the two (which goes first alternates too), after one
warm-up each, so machine noise hits both alike. On a shared machine: before each run the script waits up to
--settle seconds for quiet, and a run during which other work used more than --foreign of the CPUs is redone
(at most --runs extra runs, then the least disturbed --runs are kept); ``noise`` records that share per kept
run and how many runs were redone.

Figures (each the median over --runs with min and max, in .state/bench/single_stream.json):

- ``decode_tok_s``: tokens/s between the first and the last streamed token, per side;
- ``ratio``: per run, ours over HTTP / in-process decode tokens/s (1.0 = the server costs nothing);
- ``ttft_ms``: time to first token from the call (in-process) or from sending the request (HTTP);
- ``ttft_overhead_ms``: per run, HTTP TTFT - in-process TTFT: what tokenizing, queueing, the server and HTTP
  add before the first token;
- ``short_prompt``: the same figures with the short prompt (and its ``prompt_tokens``), from the same runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import Timing

log = logging.getLogger("bench.single_stream")

default_model = benchlib.default_model  # kept importable from here


def load_llama(model: Path, threads: int, context: int) -> Any:
    from llama_cpp import Llama

    return Llama(
        model_path=str(model),
        n_ctx=context,
        n_batch=512,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


def in_process_run(llm: Any, text: str, tokens: int, limit: float) -> Timing:
    """One streamed completion straight from llama_cpp.Llama; a timestamp per chunk that carries text."""
    llm.reset()  # forget the previous prompt: no KV prefix reuse, as in our server (--prompt-cache false)
    timing = Timing(sent=time.perf_counter())
    chunks = llm.create_completion(text, max_tokens=tokens, temperature=0.0, repeat_penalty=1.0, stream=True)
    for chunk in chunks:
        piece = chunk["choices"][0]["text"]
        if piece:
            timing.stamps.append(time.perf_counter())
            timing.text += piece
        if time.perf_counter() - timing.sent > limit:
            chunks.close()
            raise benchlib.TooSlowError(f"in-process completion took over {limit:.0f}s")
    return timing


def runtime_server(model: Path, threads: int, context: int, parallel: int) -> benchlib.Server:
    port = benchlib.free_port()
    command = [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve", "--model", str(model)]
    command += ["--port", str(port), "--model-name", "bench", "--parallel", str(parallel)]
    command += ["--threads", str(threads), "--context-length", str(context)]
    command += ["--temperature", "0", "--repeat-penalty", "1.0"]
    # No prompt cache: the in-process side reuses nothing either, and an idle re-read of the kept answer would take
    # CPU from the in-process run that follows.
    command += ["--prompt-cache", "false"]
    return benchlib.Server("slm-runtime", command, "/readyz", port)


def http_run(url: str, text: str, tokens: int, limit: float) -> Timing:
    timings, _ = asyncio.run(benchlib.wave(url, [benchlib.completion_body(text, tokens)], limit))
    return timings[0]


def short_prompt(llm: Any, run: int, count: int) -> str:
    """The first tokens of run ``run``'s prompt: ``count`` tokens with the BOS token both sides add."""
    tokens = llm.tokenize(benchlib.prompt(run).encode(), add_bos=False)[: max(count - 1, 1)]
    return str(llm.detokenize(tokens).decode("utf-8", errors="ignore"))


def pair(llm: Any, url: str, run: int, text: str, args: argparse.Namespace) -> tuple[Timing, Timing]:
    """Run ``run`` of both sides on the same prompt ``text``; the side that goes first alternates."""
    tokens, limit = args.tokens, args.run_timeout
    if run % 2:
        local = in_process_run(llm, text, tokens, limit)
        remote = http_run(url, text, tokens, limit)
    else:
        remote = http_run(url, text, tokens, limit)
        local = in_process_run(llm, text, tokens, limit)
    log.info(
        "run %d (%d prompt tokens): in-process %d tok %.1f tok/s ttft %.1f ms | HTTP %d tok %.1f tok/s ttft %.1f ms",
        run,
        len(llm.tokenize(text.encode())),
        local.tokens,
        local.decode_tok_s,
        local.ttft * 1000,
        remote.tokens,
        remote.decode_tok_s,
        remote.ttft * 1000,
    )
    return local, remote


Pairs = tuple[tuple[Timing, Timing], tuple[Timing, Timing] | None]
"""One run: the long prompt's pair, and the short prompt's (None without a short case)."""


def both(llm: Any, url: str, run: int, args: argparse.Namespace) -> Pairs:
    """Run ``run`` with the long prompt, then (when asked) the short one; which goes first alternates too."""
    long_text = benchlib.prompt(run)
    if not args.prompt_tokens:
        return pair(llm, url, run, long_text, args), None
    short_text = short_prompt(llm, run, args.prompt_tokens)
    if (run // 2) % 2:
        short = pair(llm, url, run, short_text, args)
        return pair(llm, url, run, long_text, args), short
    long = pair(llm, url, run, long_text, args)
    return long, pair(llm, url, run, short_text, args)


def summarize(pairs: list[tuple[Timing, Timing]]) -> dict[str, Any]:
    summary = benchlib.compare_pairs(pairs, "in_process", "http")
    summary["same_text"] = sum(a.text == b.text for a, b in pairs)
    return summary


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    server = runtime_server(model, args.threads, args.context_length, args.parallel)
    try:
        server.start()
        llm = load_llama(model, args.threads, args.context_length)
        with contextlib.suppress(benchlib.TooSlowError):
            both(llm, server.url, 0, args)  # warm-up, not counted
        runs = benchlib.clean_runs(lambda run: both(llm, server.url, run, args), args.runs, args.foreign, args.settle)
        memory = {"runtime_server": server.rss(), "model_file_mib": round(model.stat().st_size / 2**20, 1)}
        shown = [short_prompt(llm, run, args.prompt_tokens) for run in (1, 2)] if args.prompt_tokens else []
        short_tokens = [len(llm.tokenize(text.encode())) for text in shown]
    finally:
        server.stop()
    result = {**summarize([long for long, _ in runs.results]), "memory_mib": memory, "noise": runs.noise()}
    shorts = [short for _, short in runs.results if short is not None]
    if shorts:
        result["short_prompt"] = {"prompt_tokens": max(short_tokens), **summarize(shorts)}
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--parallel", type=int, default=1, help="--parallel of our server")
    parser.add_argument(
        "--prompt-tokens", type=int, default=8, help="tokens of the short prompt case, BOS included (0: long only)"
    )
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--run-timeout", type=float, default=20, help="seconds per side before a run is abandoned")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "single_stream.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model")} | {"model": model.name}
    result = benchlib.header("single_stream", params)
    try:
        result |= measure(args, model)
    except (RuntimeError, httpx.HTTPError, benchlib.TooSlowError) as error:
        log.error("single stream benchmark failed: %s", error)
        return 1
    benchlib.finish(result, args.out)
    cases = [("long prompt", result)]
    if "short_prompt" in result:
        cases.append((f"{result['short_prompt']['prompt_tokens']}-token prompt", result["short_prompt"]))
    for name, case in cases:
        ratio, overhead = case["ratio"], case["ttft_overhead_ms"]
        print(
            f"single stream, {name}: HTTP/in-process decode tok/s ratio {ratio['median']:.3f} "
            f"(min {ratio['min']:.3f}, max {ratio['max']:.3f}); "
            f"TTFT overhead {overhead['median']:.1f} ms (min {overhead['min']:.1f}, max {overhead['max']:.1f}); "
            f"in-process {case['decode_tok_s']['in_process']['median']:.1f} tok/s "
            f"ttft {case['ttft_ms']['in_process']['median']:.1f} ms, "
            f"HTTP {case['decode_tok_s']['http']['median']:.1f} tok/s ttft {case['ttft_ms']['http']['median']:.1f} ms"
        )
    ratio = result["ratio"]
    return 0 if not math.isnan(ratio["median"]) else 1


if __name__ == "__main__":
    sys.exit(main())
