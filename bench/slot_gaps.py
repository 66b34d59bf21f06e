#!/usr/bin/env python3
"""Slot gaps: aggregate tokens/s of four sequences on packed slots, on spread slots with fillers, and without.

    .venv/bin/python bench/slot_gaps.py [--model GGUF] [--runs 5] [--tokens 64] [--threads 2]
                                        [--context-length 2048] [--settle 5] [--foreign 0.2]
                                        [--out .state/bench/slot_gaps.json]

llama.cpp decodes only consecutive sequence ids in one pass over the weights (docs/batching.md, "One pass over the
weights per step"). One engine in this process (``--parallel 8``, batch-invariant defaults) runs, in every run, three
waves of four greedy generations started together, in rotating order:

- ``packed``: slots 0, 1, 2, 3 (what the scheduler's lowest-free-slot rule aims for);
- ``spread``: slots 0, 2, 4, 6, whose gaps the decoder fills with one filler token each;
- ``spread_unfilled``: the same slots with fillers turned off (``batch_plan.MAX_FILLED_GAP = 0``), so every step
  takes four passes.

Figures (median over --runs with min and max, in .state/bench/slot_gaps.json): ``tok_s`` per layout (all tokens of
the wave over its wall time, prompts included) and ``ratio_to_packed``, per run, each layout over ``packed``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

log = logging.getLogger("bench.slot_gaps")

LAYOUTS = {"packed": (0, 1, 2, 3), "spread": (0, 2, 4, 6), "spread_unfilled": (0, 2, 4, 6)}


def load(model: Path, args: argparse.Namespace) -> Any:
    from slm_runtime.engines.llama_cpp import LlamaCppEngine
    from slm_runtime.settings import settings_from_sources

    flags = {"model": str(model), "parallel": 8, "threads": args.threads, "context_length": args.context_length}
    return LlamaCppEngine.load(settings_from_sources(flags, {}))


def wave(engine: Any, layout: str, first_prompt: int, tokens: int) -> float:
    """Aggregate tokens/s of four greedy generations on the layout's slots, started together."""
    from slm_runtime.engines import batch_plan
    from slm_runtime.engines.base import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    slots = LAYOUTS[layout]
    prompts = [engine.tokenize(benchlib.prompt(first_prompt + i)) for i in range(len(slots))]
    counts = [0] * len(slots)

    def generate(index: int) -> None:
        counts[index] = sum(1 for _ in engine.stream(slots[index], prompts[index], params, threading.Event()))

    filled = batch_plan.MAX_FILLED_GAP
    batch_plan.MAX_FILLED_GAP = 0 if layout == "spread_unfilled" else filled
    try:
        threads = [threading.Thread(target=generate, args=(i,)) for i in range(len(slots))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    finally:
        batch_plan.MAX_FILLED_GAP = filled
    total = sum(counts)
    log.info("%-16s slots %s: %d tokens in %.2fs = %.1f tok/s", layout, slots, total, wall, total / wall)
    return total / wall


def one_run(engine: Any, run: int, tokens: int) -> dict[str, float]:
    """Every layout once, the order rotating from run to run; distinct prompt numbers per run and layout."""
    names = list(LAYOUTS)
    order = names[run % len(names) :] + names[: run % len(names)]
    return {name: wave(engine, name, 10_000 + run * 100 + names.index(name) * 10, tokens) for name in order}


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    engine = load(model, args)
    try:
        one_run(engine, 0, args.tokens)  # warm-up, not counted
        runs = benchlib.clean_runs(lambda run: one_run(engine, run, args.tokens), args.runs, args.foreign, args.settle)
    finally:
        engine.close()
    results = runs.results
    return {
        "tok_s": {name: benchlib.spread([r[name] for r in results], 1) for name in LAYOUTS},
        "ratio_to_packed": {
            name: benchlib.spread([benchlib.ratio(r[name], r["packed"]) for r in results]) for name in LAYOUTS
        },
        "noise": runs.noise(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048, help="tokens per sequence (slot)")
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "slot_gaps.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {"runs": args.runs, "tokens": args.tokens, "threads": args.threads, "context_length": args.context_length}
    result = benchlib.header("slot_gaps", params | {"model": model.name, "parallel": 8})
    result |= measure(args, model)
    benchlib.finish(result, args.out)
    ratios = result["ratio_to_packed"]
    print(
        f"slot gaps: spread/packed {ratios['spread']['median']:.2f} with fillers, "
        f"{ratios['spread_unfilled']['median']:.2f} without"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
