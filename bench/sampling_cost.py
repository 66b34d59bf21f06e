#!/usr/bin/env python3
"""Sampling cost at temperature > 0: llama.cpp's sampler chain against the numpy draw (engines/draw.py).

    .venv/bin/python bench/sampling_cost.py [--model GGUF] [--steps 96] [--runs 3] [--tokens 160] [--threads 2]
                                            [--concurrency 4 8] [--settle 5] [--out .state/bench/sampling_cost.json]

One llama.cpp engine in this process (``--parallel 8``, batch-invariant defaults). Two measurements:

- ``per_token``: for each parameter set of :data:`PARAMETER_SETS`, one generation of ``--steps`` tokens at a time
  (distinct prompts) whose every step is sampled by both samplers, made for the same parameters and seed, in an
  order that alternates from step to step, each call timed (``choose``: everything the decoder thread spends on
  sampling); the chain's token is emitted (each sampler keeps its own penalty window, of the same size). Figures:
  microseconds per token (median, p90) per sampler and ``ratio`` (the chain's median over the draw's), and the share
  of steps the draw left to llama.cpp's cuts (``deferred_share``);
- ``decode``: at temperature 0.8 (the other options at their defaults: top-k 40, top-p 0.9, repeat penalty 1.1),
  ``concurrency`` generations of ``--tokens`` tokens started together, ``--runs`` times (distinct prompts); every
  sequence has both samplers (:class:`Alternating`) and the decode steps alternate between them: every sequence
  is sampled by the chain in one step and by the draw in the next (the other sampler accepts the token chosen, so
  both keep the same penalty window). Each step is timed on the decoder thread (one decode of the batch and its
  sampling), only steps in which all ``concurrency`` sequences were generating are counted. Adjacent steps share
  whatever else the machine was doing, so the figures hold under other load: per sampler the median step time
  and decode tokens/s per sequence, and ``ratio`` (the draw's tokens/s over the chain's: their median step times,
  per run); also the decoder thread's CPU time per step (``decoder_cpu_ms``, ``cpu_ratio``: the chain's over the
  draw's), which other processes disturb less than wall time.
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

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
    """Makes the engine's samplers (``variant``): the chain, the draw, both timed side by side (``both``:
    :class:`SideBySide`) or both taking turns step by step (``alternating``: :class:`Alternating`)."""

    def __init__(self) -> None:
        from slm_runtime.engines import llama_cpp

        self._module = llama_cpp
        self._original = llama_cpp.make_sampler
        self.variant = "draw"
        self.phase = Phase()
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
        chain = ChainSampler(sampler_chain(vocab, n_vocab, params, seed, None))
        self.made.append(SideBySide(chain, draw) if self.variant == "both" else Alternating(chain, draw, self.phase))
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


def per_token(engine: Any, samplers: Samplers, steps: int, settle_s: float) -> dict[str, Any]:
    from slm_runtime.engines.base import SamplingParams

    samplers.variant = "both"
    cases: dict[str, Any] = {}
    try:
        for number, (name, options) in enumerate(PARAMETER_SETS.items()):
            samplers.made.clear()
            benchlib.settle(settle_s)
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


class Phase:
    """Which sampler the sequences use in the current step, and each step's time by sampler (decoder thread)."""

    def __init__(self, wanted: int = 0) -> None:
        self.variant = VARIANTS[0]
        self.steps: dict[str, list[float]] = {v: [] for v in VARIANTS}
        self.cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
        self.wanted = wanted
        self._calls = 0
        self._generating = False
        self._last: tuple[float, float] | None = None

    def observe(self, sequences: int, tokens: int) -> None:
        """After each ``llama_decode`` call of a step: the step counts when its one call was all wanted sequences
        generating one token each (no prompt chunk beside them)."""
        self._generating = self._calls == 0 and sequences == tokens == self.wanted
        self._calls += 1

    def after_step(self) -> None:
        """After each step's sampling: time it, then hand the next step to the other sampler."""
        now = (time.perf_counter(), time.thread_time())
        if self._last is not None and self._calls == 1 and self._generating:
            self.steps[self.variant].append(now[0] - self._last[0])
            self.cpu[self.variant].append(now[1] - self._last[1])
        self._last = now
        self._calls = 0
        self.variant = VARIANTS[1] if self.variant == VARIANTS[0] else VARIANTS[0]


class Alternating:
    """One sequence's chain and draw, taking turns as :class:`Phase` says; the other accepts the token chosen."""

    def __init__(self, chain: Any, draw: Any, phase: Phase) -> None:
        self.chain = chain
        self.draw = draw
        self.phase = phase

    def choose(self, step: Any) -> int:
        if self.phase.variant == "chain":
            token = int(self.chain.choose(step))
            self.draw.remember(token)
        else:
            token = int(self.draw.choose(step))
            self.chain.accept(token)
        return token

    def close(self) -> None:
        self.chain.close()
        self.draw.close()


def wave(engine: Any, samplers: Samplers, concurrency: int, first: int, tokens: int, settle_s: float) -> Phase:
    """``concurrency`` generations at temperature 0.8 started together, the steps alternating between samplers."""
    from slm_runtime.engines.base import SamplingParams

    samplers.variant = "alternating"
    benchlib.settle(settle_s)
    phase = samplers.phase = Phase(concurrency)

    def generate(slot: int) -> None:
        params = SamplingParams(max_tokens=tokens, temperature=0.8, seed=first + slot)
        prompt = engine.tokenize(benchlib.prompt(first + slot))
        for _ in engine.stream(slot, prompt, params, threading.Event()):
            pass

    threads = [threading.Thread(target=generate, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    steps = phase.steps
    log.info(
        "x%d: %d chain steps of %.1f ms, %d draw steps of %.1f ms (medians)",
        concurrency,
        len(steps["chain"]),
        1e3 * statistics.median(steps["chain"] or [math.nan]),
        len(steps["draw"]),
        1e3 * statistics.median(steps["draw"] or [math.nan]),
    )
    return phase


def decode(engine: Any, samplers: Samplers, args: argparse.Namespace) -> dict[str, Any]:
    engine.observe_steps(lambda sequences, tokens: samplers.phase.observe(sequences, tokens))
    engine.after_steps(lambda: samplers.phase.after_step())
    cases: dict[str, Any] = {}
    try:
        for concurrency in args.concurrency:
            wave(engine, samplers, concurrency, 1, 8, 0)  # warm-up, not counted
            runs = [
                wave(engine, samplers, concurrency, 10_000 * run + 100 * concurrency, args.tokens, args.settle)
                for run in range(1, args.runs + 1)
            ]
            every = {v: [s for r in runs for s in r.steps[v]] for v in VARIANTS}
            cpu = {v: [s for r in runs for s in r.cpu[v]] for v in VARIANTS}
            cases[f"x{concurrency}"] = {
                "steps": {v: len(every[v]) for v in VARIANTS},
                "step_ms": {v: round(1e3 * statistics.median(every[v]), 2) for v in VARIANTS},
                "tok_s": {v: round(1 / statistics.median(every[v]), 1) for v in VARIANTS},
                "ratio": benchlib.spread(
                    [
                        benchlib.ratio(statistics.median(r.steps["chain"]), statistics.median(r.steps["draw"]))
                        for r in runs
                    ]
                ),
                "decoder_cpu_ms": {v: round(1e3 * statistics.median(cpu[v]), 2) for v in VARIANTS},
                "cpu_ratio": benchlib.spread(
                    [benchlib.ratio(statistics.median(r.cpu["chain"]), statistics.median(r.cpu["draw"])) for r in runs]
                ),
            }
    finally:
        engine.observe_steps(None)
        engine.after_steps(None)
    return cases


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--steps", type=int, default=96, help="tokens per parameter set sampled by both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=160, help="most new tokens per generation in the decode waves")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=512, help="tokens per sequence (slot)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 8], choices=range(1, PARALLEL + 1))
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
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
        result["per_token"] = per_token(engine, samplers, args.steps, args.settle)
        result["decode"] = decode(engine, samplers, args)
    finally:
        samplers.restore()
        engine.close()
    benchlib.finish(result, args.out)
    for name, case in result["per_token"].items():
        print(f"sampling cost {name}: chain/draw {case['ratio']:.1f}x per token")
    for key, case in result["decode"].items():
        ratio = case["ratio"]
        spread = f"(min {ratio['min']:.2f}, max {ratio['max']:.2f})"
        print(f"decode {key} at T=0.8: draw/chain tokens/s {ratio['median']:.2f} {spread}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
