#!/usr/bin/env python3
"""Constrained decoding: tokens/s of a forced tool call under its JSON-schema grammar against free generation.

    .venv/bin/python bench/constrained_decoding.py [--model GGUF] [--runs 5] [--tokens 96] [--threads 2]
                                                   [--temperatures 0 0.8] [--concurrency 1 4] [--settle 5]
                                                   [--foreign 0.2] [--out .state/bench/constrained_decoding.json]

One llama.cpp engine in this process (``--parallel 4``, batch-invariant defaults), the same tool-call prompt
(numbered per run and sequence, so no prompt cache helps), at each temperature and concurrency three waves of
generations started together, in an order that rotates from run to run:

- ``free``: no grammar (what the same prompt costs without one);
- ``grammar``: ``SamplingParams.json_schema`` = a forced call of one of three functions (``anyOf`` of
  ``{"name": {"const": ...}, "arguments": {...}}`` with nested objects, enums, arrays, integers and booleans),
  through :class:`slm_runtime.engines.constrained.GrammarSampler`;
- ``masked``: the same grammar inside llama.cpp's sampler chain, masking the whole vocabulary at every token (how
  the engine sampled under a grammar before the grammar sampler: the "before" figure, in the same run).

Figures (median over --runs with min and max, in .state/bench/constrained_decoding.json), per temperature and
concurrency: ``tok_s`` per variant (tokens/s per sequence while all of the wave's sequences were generating:
:func:`all_running_rate`), ``ratio_to_free`` per run (each variant over ``free`` of the same run: the issue's target is
``grammar`` >= 0.9), ``complete`` (outputs that closed within --tokens and validate against the schema, of all:
the base model sometimes keeps adding array items until the limit), ``noise`` per case,
``refused_share`` (tokens whose first-choice the grammar refused) and ``masked_share`` (tokens that needed the
first-byte mask over the vocabulary rather than a pool of the best candidates).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

import benchlib

from slm_runtime.tools.grammar import forced_call_schema
from slm_runtime.tools.types import ToolChoice, ToolFunction

log = logging.getLogger("bench.constrained_decoding")

VARIANTS = ("free", "grammar", "masked")
PARALLEL = 4


TOOLS = (
    ToolFunction(
        "get_weather",
        "",
        {
            "type": "object",
            "properties": {
                "location": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city"],
                },
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer"},
            },
            "required": ["location", "unit"],
        },
    ),
    ToolFunction(
        "search_flights",
        "",
        {
            "type": "object",
            "properties": {
                "origin": {"type": "string"},
                "destination": {"type": "string"},
                "passengers": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                        "required": ["name"],
                    },
                },
                "cabin": {"enum": ["economy", "business", "first"]},
            },
            "required": ["origin", "destination", "passengers"],
        },
    ),
    ToolFunction(
        "send_email",
        "",
        {
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": {"type": "string"}},
                "subject": {"type": "string"},
                "body": {"type": "string"},
                "urgent": {"type": "boolean"},
            },
            "required": ["to", "subject", "body"],
        },
    ),
)
TOOL_CALL = forced_call_schema(TOOLS, ToolChoice("required", parallel=False))
"""A forced call of one of three functions, as a tool-calling request with tool_choice "required" constrains it."""

TOOLS_PROMPT = (
    "Request {n}. You can call these functions; answer with one call as JSON, "
    '{{"name": ..., "arguments": {{...}}}}.\n'
    "get_weather(location: {{city, country}}, unit: celsius or fahrenheit, days: integer): the forecast.\n"
    "search_flights(origin, destination, passengers: [{{name, age}}], cabin: economy, business or first).\n"
    "send_email(to: [address], subject, body, urgent: boolean): sends an email.\n"
    "User: {request}\nCall:"
)
REQUESTS = (
    "What will the weather be in Lyon for the next three days?",
    "Find business class flights from Oslo to Rome for Ann (34) and Tom (36).",
    "Email bob@example.com that the review moves to Friday, and mark it urgent.",
    "Is it going to rain in Porto tomorrow? Give me Fahrenheit.",
)


def tool_prompt(n: int) -> str:
    return TOOLS_PROMPT.format(n=n, request=REQUESTS[n % len(REQUESTS)])


def load(model: Path, args: argparse.Namespace) -> Any:
    from slm_runtime.engines.base import SamplingParams
    from slm_runtime.engines.llama_cpp import LlamaCppEngine
    from slm_runtime.settings import settings_from_sources

    flags = {"model": str(model), "parallel": PARALLEL, "threads": args.threads, "context_length": args.context_length}
    engine = LlamaCppEngine.load(settings_from_sources(flags, {}))
    engine.validate(SamplingParams(max_tokens=1, json_schema=TOOL_CALL))  # the one-time vocabulary index
    return engine


class Samplers:
    """Chooses how the engine samples under a grammar for a wave, and keeps the grammar samplers it makes."""

    def __init__(self) -> None:
        from slm_runtime.engines import llama_cpp

        self._module = llama_cpp
        self._original = llama_cpp.make_sampler
        self.made: list[Any] = []
        self.masking = False
        llama_cpp.make_sampler = self._make

    def _make(self, vocab: Any, n_vocab: int, params: Any, seed: int, grammar: Any, index: Any) -> Any:
        from slm_runtime.engines.samplers import ChainSampler, sampler_chain

        if self.masking and grammar is not None:
            return ChainSampler(sampler_chain(vocab, n_vocab, params, seed, grammar))
        sampler = self._original(vocab, n_vocab, params, seed, grammar, index)
        self.made.append(sampler)
        return sampler

    def restore(self) -> None:
        self._module.make_sampler = self._original


def wave(
    engine: Any, samplers: Samplers, variant: str, case: tuple[float, int], first: int, tokens: int
) -> dict[str, Any]:
    """``concurrency`` generations of ``variant`` started together; per-sequence decode tok/s and the outputs."""
    from slm_runtime.engines.base import SamplingParams

    temperature, concurrency = case
    schema = None if variant == "free" else TOOL_CALL
    samplers.masking = variant == "masked"
    samplers.made.clear()
    stamps: list[list[float]] = [[] for _ in range(concurrency)]
    texts = [""] * concurrency

    def generate(slot: int) -> None:
        params = SamplingParams(
            max_tokens=tokens, temperature=temperature, seed=first + slot, repeat_penalty=1.0, json_schema=schema
        )
        prompt = engine.tokenize(tool_prompt(first + slot))
        for token in engine.stream(slot, prompt, params, threading.Event()):
            stamps[slot].append(time.perf_counter())
            texts[slot] += token.text

    threads = [threading.Thread(target=generate, args=(slot,)) for slot in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result: dict[str, Any] = {"tok_s": all_running_rate(stamps)}
    result["tokens"] = sum(len(s) for s in stamps)
    if variant != "free":
        result["valid"] = sum(valid_call(text) for text in texts)
        result["outputs"] = concurrency
    if variant == "grammar":
        result["refused"] = sum(s.refused for s in samplers.made)
        result["masked"] = sum(s.masked for s in samplers.made)
    log.info(
        "T=%g x%d %-7s %4d tokens, %.1f tok/s per sequence%s",
        temperature,
        concurrency,
        variant,
        result["tokens"],
        result["tok_s"],
        f", refused {result['refused']}, masked {result['masked']}" if variant == "grammar" else "",
    )
    return result


def all_running_rate(stamps: list[list[float]]) -> float:
    """Tokens/s per sequence while every sequence of the wave was generating: from the last first token to the first
    last token. A tool call ends sooner than free text; counting past its end would time free sequences with fewer
    neighbours (faster steps) than constrained ones, or the other way round."""
    if any(len(s) < 2 for s in stamps):
        return float("nan")
    start, end = max(s[0] for s in stamps), min(s[-1] for s in stamps)
    if end <= start:
        return float("nan")
    produced = sum(sum(1 for t in s if start < t <= end) for s in stamps)
    return produced / (end - start) / len(stamps)


def valid_call(text: str) -> bool:
    """Whether the output parses and (with jsonschema installed: the dev extra) validates against the schema."""
    try:
        value = json.loads(text)
    except ValueError:
        return False
    try:
        import jsonschema
    except ImportError:
        return isinstance(value, dict)
    try:
        jsonschema.validate(value, TOOL_CALL)
    except jsonschema.ValidationError:
        return False
    return True


def case_run(engine: Any, samplers: Samplers, case: tuple[float, int], run: int, tokens: int) -> dict[str, Any]:
    """The case's three variants back to back, their order rotating from run to run; distinct prompt numbers."""
    order = VARIANTS[run % 3 :] + VARIANTS[: run % 3]
    first = 10_000 * (run + 1) + 1_000 * int(case[0] * 10) + 100 * case[1]
    return {variant: wave(engine, samplers, variant, case, first + 10 * i, tokens) for i, variant in enumerate(order)}


def case_key(case: tuple[float, int]) -> str:
    return f"t{case[0]:g}_x{case[1]}"


def summarize(runs: list[dict[str, Any]], noise: dict[str, Any]) -> dict[str, Any]:
    grammar = [r["grammar"] for r in runs]
    generated = max(1, sum(g["tokens"] for g in grammar))
    return {
        "tok_s": {v: benchlib.spread([r[v]["tok_s"] for r in runs], 1) for v in VARIANTS},
        "ratio_to_free": {
            v: benchlib.spread([benchlib.ratio(r[v]["tok_s"], r["free"]["tok_s"]) for r in runs])
            for v in ("grammar", "masked")
        },
        "complete": {
            v: f"{sum(r[v]['valid'] for r in runs)}/{sum(r[v]['outputs'] for r in runs)}" for v in ("grammar", "masked")
        },
        "refused_share": round(sum(g["refused"] for g in grammar) / generated, 3),
        "masked_share": round(sum(g["masked"] for g in grammar) / generated, 3),
        "noise": noise,
    }


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    """Each case in turn, its runs kept or redone by the CPU share other work took during them (short windows:
    one case's three waves, so a burst of other work costs one redone run, not a whole sweep)."""
    engine = load(model, args)
    samplers = Samplers()
    cases: dict[str, Any] = {}
    try:
        for case in itertools.product(args.temperatures, args.concurrency):
            case_run(engine, samplers, case, 0, args.tokens)  # warm-up, not counted

            def measured(run: int, case: tuple[float, int] = case) -> dict[str, Any]:
                return case_run(engine, samplers, case, run, args.tokens)

            runs = benchlib.clean_runs(measured, args.runs, args.foreign, args.settle)
            cases[case_key(case)] = summarize(runs.results, runs.noise())
    finally:
        samplers.restore()
        engine.close()
    return {"cases": cases, "schema": TOOL_CALL}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=96, help="most new tokens per generation")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=1024, help="tokens per sequence (slot)")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.0, 0.8])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], choices=range(1, PARALLEL + 1))
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "constrained_decoding.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model")} | {"model": model.name}
    result = benchlib.header("constrained_decoding", params | {"parallel": PARALLEL})
    result |= measure(args, model)
    benchlib.finish(result, args.out)
    for key, case in result["cases"].items():
        ratios = case["ratio_to_free"]
        print(
            f"constrained decoding {key}: grammar/free {ratios['grammar']['median']:.2f} "
            f"(min {ratios['grammar']['min']:.2f}, max {ratios['grammar']['max']:.2f}), "
            f"masking every token/free {ratios['masked']['median']:.2f}; complete {case['complete']['grammar']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
