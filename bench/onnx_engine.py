#!/usr/bin/env python3
"""ONNX engine: our onnxruntime-genai engine in-process against onnxruntime-genai's own generation loop.

    .venv/bin/python bench/onnx_engine.py [--model DIR] [--runs 7] [--tokens 64]
                                          [--context-length 2048] [--settle 5] [--foreign 0.2]
                                          [--out .state/bench/onnx_engine.json]

Model: the Gemma 3 270M int4 folder that hack/build_onnx_model.py builds into
$SLM_CACHE_HOME/models/gemma3-270m-onnx-int4 (the script records a skip when it is missing: building it needs
a throwaway torch environment). Both sides in this process, each with its own ``og.Model`` loaded from the
same folder with the CPU provider and onnxruntime's default thread count (our engine sets none either):

- ours: ``slm_runtime.engines.load_engine`` then ``Engine.stream`` (its own Generator, EOS check, streaming
  detokenizer, cancellation check per token);
- baseline: ``og.GeneratorParams`` / ``og.Generator`` / ``append_tokens`` / ``generate_next_token`` with the same
  search options (greedy, repetition_penalty 1.0, the same max_length) and the same streaming detokenizer.

Same prompt token ids (numbered per run, identical for both sides), --tokens new tokens, runs alternating
between the two (which goes first alternates too) after one warm-up each; runs that other work disturbed (more than
--foreign of the CPUs) are redone, as in bench/single_stream.py (``noise``).

Figures (median over --runs with min and max, in .state/bench/onnx_engine.json):

- ``decode_tok_s``: tokens/s between the first and the last token, per side;
- ``ratio``: per run, ours / baseline decode tokens/s (1.0 = the engine wrapper costs nothing);
- ``ttft_ms``: time from the call to the first token (prompt evaluation included), and the per-run difference.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Timing

log = logging.getLogger("bench.onnx_engine")


def load_ours(model: Path, context: int) -> Any:
    from slm_runtime.engines import load_engine
    from slm_runtime.settings import settings_from_sources

    flags = {"model": str(model), "context_length": context, "parallel": 1, "model_name": "bench"}
    return load_engine(settings_from_sources(flags, {}))


def load_baseline(model: Path) -> tuple[Any, Any]:
    import onnxruntime_genai as og

    config = og.Config(str(model))
    config.clear_providers()
    og_model = og.Model(config)
    return og_model, og.Tokenizer(og_model)


def _too_slow(timing: Timing, limit: float) -> benchlib.TooSlowError | None:
    elapsed = time.perf_counter() - timing.sent
    return benchlib.TooSlowError(f"a generation took over {limit:.0f}s") if elapsed > limit else None


def run_ours(engine: Any, ids: list[int], tokens: int, limit: float) -> Timing:
    from slm_runtime.engines.base import SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    timing = Timing(sent=time.perf_counter())
    stream = engine.stream(0, ids, params, threading.Event())
    for token in stream:
        timing.stamps.append(time.perf_counter())
        timing.text += token.text
        if error := _too_slow(timing, limit):
            stream.close()  # our engine's generator: frees its Generator
            raise error
    return timing


def run_baseline(baseline: tuple[Any, Any], ids: list[int], tokens: int, context: int, limit: float) -> Timing:
    """onnxruntime-genai's documented loop; search options as our engine sets them for greedy decoding."""
    import numpy as np
    import onnxruntime_genai as og

    model, tokenizer = baseline
    timing = Timing(sent=time.perf_counter())
    params = og.GeneratorParams(model)
    max_length = min(max(512, len(ids) + tokens), max(512, context))
    params.set_search_options(max_length=max_length, do_sample=False, repetition_penalty=1.0)
    generator = og.Generator(model, params)
    generator.append_tokens(np.asarray(ids, dtype=np.int32))
    decoder = tokenizer.create_stream()
    while not generator.is_done() and len(timing.stamps) < tokens:
        generator.generate_next_token()
        text = decoder.decode(int(generator.get_next_tokens()[0]))
        timing.stamps.append(time.perf_counter())
        timing.text += text
        if error := _too_slow(timing, limit):
            raise error
    return timing


def pair(engine: Any, baseline: tuple[Any, Any], run: int, args: argparse.Namespace) -> tuple[Timing, Timing]:
    ids = engine.tokenize(benchlib.prompt(run))
    limit = args.run_timeout
    if run % 2:
        base = run_baseline(baseline, ids, args.tokens, args.context_length, limit)
        ours = run_ours(engine, ids, args.tokens, limit)
    else:
        ours = run_ours(engine, ids, args.tokens, limit)
        base = run_baseline(baseline, ids, args.tokens, args.context_length, limit)
    log.info(
        "run %d: baseline %d tok %.1f tok/s ttft %.0f ms | ours %d tok %.1f tok/s ttft %.0f ms",
        run,
        base.tokens,
        base.decode_tok_s,
        base.ttft * 1000,
        ours.tokens,
        ours.decode_tok_s,
        ours.ttft * 1000,
    )
    return base, ours


def summarize(pairs: list[tuple[Timing, Timing]]) -> dict[str, Any]:
    return benchlib.compare_pairs(pairs, "baseline", "ours")


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    engine = load_ours(model, args.context_length)
    baseline = load_baseline(model)
    try:
        with contextlib.suppress(benchlib.TooSlowError):
            pair(engine, baseline, 0, args)  # warm-up, not counted
        runs = benchlib.clean_runs(lambda run: pair(engine, baseline, run, args), args.runs, args.foreign, args.settle)
    finally:
        engine.close()
    size = sum(p.stat().st_size for p in model.iterdir() if p.is_file())
    return summarize(runs.results) | {
        "process_rss_mib": benchlib.rss_mib_self(),
        "model_folder_mib": round(size / 2**20, 1),
        "noise": runs.noise(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=benchlib.default_onnx_model(), help="onnxruntime-genai folder")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--run-timeout", type=float, default=20, help="seconds per side before a run is abandoned")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "onnx_engine.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    params = {"runs": args.runs, "tokens": args.tokens, "context_length": args.context_length}
    result = benchlib.header("onnx_engine", params | {"model": args.model.name})
    if not (args.model / "genai_config.json").is_file():
        log.warning("skipped: %s is not built (hack/build_onnx_model.py builds it)", args.model)
        result["skipped"] = "ONNX model not built (hack/build_onnx_model.py)"
        benchlib.finish(result, args.out)
        return 0
    result |= measure(args, args.model)
    benchlib.finish(result, args.out)
    ratio = result["ratio"]
    print(
        f"onnx engine: ours/baseline decode tok/s ratio {ratio['median']:.3f} (min {ratio['min']:.3f}, "
        f"max {ratio['max']:.3f}); baseline {result['decode_tok_s']['baseline']['median']:.1f} tok/s, "
        f"ours {result['decode_tok_s']['ours']['median']:.1f} tok/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
