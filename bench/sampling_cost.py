#!/usr/bin/env python3
"""Sampling cost at temperature > 0: llama.cpp's sampler chain against the numpy draw (engines/draw.py).

    .venv/bin/python bench/sampling_cost.py [--model GGUF] [--steps 96] [--runs 3] [--tokens 48] [--threads 2]
                                            [--concurrency 4 8] [--settle 5] [--foreign 0.2]
                                            [--out .state/bench/sampling_cost.json]

One llama.cpp engine in this process (``--parallel 8``, batch-invariant defaults). Two measurements:

- ``per_token``: for each parameter set of :data:`PARAMETER_SETS`, one generation of ``--steps`` tokens at a time
  (distinct prompts) whose every step is sampled by both samplers, made for the same parameters and seed, in an
  order that alternates from step to step, each call timed (``choose``: everything the decoder thread spends on
  sampling); the chain's token is emitted (each sampler keeps its own penalty window, of the same size). Figures:
  microseconds per token (median, p90) per sampler and ``ratio`` (the chain's median over the draw's), and the share
  of steps the draw left to llama.cpp's cuts (``deferred_share``);
- ``decode``: at temperature 0.8 (the other options at their defaults: top-k 40, top-p 0.9, repeat penalty 1.1),
  ``concurrency`` generations started together, once with every sequence sampled by the chain and once by the draw
  (the order alternating from run to run, runs redone when other work took the CPUs): tokens/s per sequence while
  all were generating, and ``ratio`` (draw over chain, per run).
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
from constrained_decoding import all_running_rate

log = logging.getLogger("bench.sampling_cost")

PARALLEL = 8
VARIANTS = ("chain", "draw")

PARAMETER_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},  # temperature 0.8, top-k 40, top-p 0.9, repeat penalty 1.1 over 64 tokens
    "top_k_1": {"top_k": 1},
    "frequency_presence": {"frequency_penalty": 0.5, "presence_penalty": 0.5},
    "min_p_whole_vocab": {"top_k": 0, "top_p": 1.0, "min_p": 0.05},
    "whole_vocab": {"top_k": 0, "top_p": 1.0, "repeat_penalty": 1.0},
}
"""Sampling options over the defaults (:class:`~slm_runtime.engines.base.SamplingParams`), temperature 0.8."""


def load(model: Path, args: argparse.Namespace) -> Any:
    from slm_runtime.engines.llama_cpp import LlamaCppEngine
    from slm_runtime.settings import settings_from_sources

    flags = {"model": str(model), "parallel": PARALLEL, "threads": args.threads, "context_length": args.context_length}
    return LlamaCppEngine.load(settings_from_sources(flags, {}))


class Samplers:
    """Makes the engine's samplers: the chain, the draw, or both timed side by side (:class:`SideBySide`)."""

    def __init__(self) -> None:
        from slm_runtime.engines import llama_cpp

        self._module = llama_cpp
        self._original = llama_cpp.make_sampler
        self.variant = "draw"
        self.made: list[Any] = []
        llama_cpp.make_sampler = self._make

    def _make(self, vocab: Any, n_vocab: int, params: Any, seed: int, grammar: Any, index: Any) -> Any:
        from slm_runtime.engines.draw import TokenDraw
        from slm_runtime.engines.samplers import ChainSampler, sampler_chain

        if grammar is not None or params.temperature <= 0:
            return self._original(vocab, n_vocab, params, seed, grammar, index)
        if self.variant == "chain":
            return ChainSampler(sampler_chain(vocab, n_vocab, params, seed, None))
        draw = self._original(vocab, n_vocab, params, seed, grammar, index)
        if not isinstance(draw, TokenDraw):
            draw.close()
            raise RuntimeError(f"the engine does not draw in numpy for {params}")
        if self.variant == "draw":
            return draw
        self.made.append(SideBySide(ChainSampler(sampler_chain(vocab, n_vocab, params, seed, None)), draw))
        return self.made[-1]

    def restore(self) -> None:
        self._module.make_sampler = self._original


class SideBySide:
    """Samples each step with both samplers, timed, in alternating order; emits the chain's token."""

    def __init__(self, chain: Any, draw: Any) -> None:
        self.chain = chain
        self.draw = draw
        self.seconds: dict[str, list[float]] = {"chain": [], "draw": []}

    def choose(self, step: Any) -> int:
        order = (("chain", self.chain), ("draw", self.draw))
        if len(self.seconds["chain"]) % 2:
            order = order[::-1]
        tokens: dict[str, int] = {}
        for name, sampler in order:
            start = time.perf_counter()
            tokens[name] = sampler.choose(step)
            self.seconds[name].append(time.perf_counter() - start)
        return tokens["chain"]

    def close(self) -> None:
        self.chain.close()
        self.draw.close()


def per_token(engine: Any, samplers: Samplers, steps: int) -> dict[str, Any]:
    from slm_runtime.engines.base import SamplingParams

    samplers.variant = "both"
    cases: dict[str, Any] = {}
    try:
        for number, (name, options) in enumerate(PARAMETER_SETS.items()):
            samplers.made.clear()
            params = SamplingParams(max_tokens=steps, temperature=0.8, seed=number, **options)
            prompt = engine.tokenize(benchlib.prompt(1000 + number))
            list(engine.stream(0, prompt, params, threading.Event()))
            (pair,) = samplers.made
            chain = [s * 1e6 for s in pair.seconds["chain"][1:]]  # the first step: allocations, first calls
            draw = [s * 1e6 for s in pair.seconds["draw"][1:]]
            cases[name] = {
                "options": options,
                "steps": len(chain),
                "chain_us": {"median": round(statistics.median(chain), 1), "p90": round(percentile(chain, 0.9), 1)},
                "draw_us": {"median": round(statistics.median(draw), 1), "p90": round(percentile(draw, 0.9), 1)},
                "ratio": round(statistics.median(chain) / statistics.median(draw), 2),
                "deferred_share": round(pair.draw.deferred / len(pair.seconds["draw"]), 4),
            }
            log.info(
                "%-20s chain %7.1f us, draw %6.1f us per token: %.1fx (%d steps, %d deferred)",
                name,
                cases[name]["chain_us"]["median"],
                cases[name]["draw_us"]["median"],
                cases[name]["ratio"],
                len(chain),
                pair.draw.deferred,
            )
    finally:
        samplers.variant = "draw"
    return cases


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def wave(engine: Any, samplers: Samplers, variant: str, concurrency: int, first: int, tokens: int) -> float:
    """``concurrency`` generations at temperature 0.8 started together; tokens/s per sequence while all ran."""
    from slm_runtime.engines.base import SamplingParams

    samplers.variant = variant
    stamps: list[list[float]] = [[] for _ in range(concurrency)]

    def generate(slot: int) -> None:
        params = SamplingParams(max_tokens=tokens, temperature=0.8, seed=first + slot)
        prompt = engine.tokenize(benchlib.prompt(first + slot))
        for _ in engine.stream(slot, prompt, params, threading.Event()):
            stamps[slot].append(time.perf_counter())

    threads = [threading.Thread(target=generate, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rate = all_running_rate(stamps)
    log.info("x%d %-5s %.1f tok/s per sequence", concurrency, variant, rate)
    return rate


def decode(engine: Any, samplers: Samplers, args: argparse.Namespace) -> dict[str, Any]:
    cases: dict[str, Any] = {}
    for concurrency in args.concurrency:
        wave(engine, samplers, "draw", concurrency, 1, args.tokens)  # warm-up, not counted

        def run(number: int, concurrency: int = concurrency) -> dict[str, float]:
            order = VARIANTS if number % 2 else VARIANTS[::-1]
            first = 10_000 * number + 100 * concurrency
            return {v: wave(engine, samplers, v, concurrency, first + 10 * i, args.tokens) for i, v in enumerate(order)}

        runs = benchlib.clean_runs(run, args.runs, args.foreign, args.settle)
        cases[f"x{concurrency}"] = {
            "tok_s": {v: benchlib.spread([r[v] for r in runs.results], 1) for v in VARIANTS},
            "ratio": benchlib.spread([benchlib.ratio(r["draw"], r["chain"]) for r in runs.results]),
            "noise": runs.noise(),
        }
    return cases


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--steps", type=int, default=96, help="tokens per parameter set sampled by both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=48, help="most new tokens per generation in the decode waves")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=512, help="tokens per sequence (slot)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8], choices=range(1, PARALLEL + 1))
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "sampling_cost.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model")} | {"model": model.name}
    result = benchlib.header("sampling_cost", params | {"parallel": PARALLEL})
    engine = load(model, args)
    samplers = Samplers()
    try:
        result["per_token"] = per_token(engine, samplers, args.steps)
        result["decode"] = decode(engine, samplers, args)
    finally:
        samplers.restore()
        engine.close()
    benchlib.finish(result, args.out)
    for name, case in result["per_token"].items():
        print(f"sampling cost {name}: chain/draw {case['ratio']:.1f}x per token")
    for key, case in result["decode"].items():
        ratio = case["ratio"]
        print(
            f"decode {key} at T=0.8: draw/chain {ratio['median']:.2f} (min {ratio['min']:.2f}, max {ratio['max']:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
