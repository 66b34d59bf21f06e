#!/usr/bin/env python3
"""ONNX engine: our onnxruntime-genai engine in-process against onnxruntime-genai's own generation loop.

    .venv/bin/python bench/onnx_engine.py [--model DIR] [--runs 7] [--tokens 64]
                                          [--context-length 2048] [--settle 5] [--foreign 0.2]
                                          [--streams 1,2,4,8] [--concurrency-runs 3]
                                          [--concurrency-tokens 32] [--out .state/bench/onnx_engine.json]

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

Then what concurrency costs (``concurrency`` in the JSON): --streams generations started together,
--concurrency-tokens each, greedy, --concurrency-runs rounds (stream counts in rotating order, the two sides
alternating which goes first), on:

- ours: the engine we ship, loaded with ``--parallel`` = the largest stream count: one ``og.Generator`` per slot,
  each on its slot's thread (no batching);
- og_engine: onnxruntime-genai's request-level ``og.Engine`` on the baseline's model, driven from this thread (its
  owner thread). On CPU it is the *static* Engine: up to 4 requests begun before a ``run`` form one batch, and no
  request joins until every request of that batch has finished.

The prompts of one round have the same token count: ``og.Engine``'s static batch fails on CPU when they differ
(``og_engine_mixed_prompt_lengths`` records that probe). Per stream count and side: ``aggregate_tok_s`` (all tokens
over the time from the start to the last token), ``per_stream_tok_s`` (each stream's decode tokens/s, the median
stream), ``ttft_ms`` (the median stream's), ``scaling`` (aggregate over the same side's single stream in the same
round), ``cpu_ms_per_token`` (this process's CPU time, every thread, over the tokens: the figure other work on
the machine disturbs least); ``og_engine_over_ours`` (aggregate ratio per round); ``identical_to_solo`` (every
stream's greedy tokens equal the same prompt generated alone). ``late_arrival_ttft_ms``: a second request sent once
the first has produced a quarter of its tokens, its TTFT on each side (the static batch makes it wait for the first
to finish).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchlib
from benchlib import Timing

log = logging.getLogger("bench.onnx_engine")


def load_ours(model: Path, context: int, parallel: int = 1) -> Any:
    from slm_runtime.engines import load_engine
    from slm_runtime.settings import settings_from_sources

    flags = {"model": str(model), "context_length": context, "parallel": parallel, "model_name": "bench"}
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


# --- concurrency: the engine we ship against og.Engine -------------------------------------------------------

OG_STATIC_BATCH = 4
"""Requests og.Engine's static (CPU) scheduler admits into one batch (its ``configured_max_batch_size``)."""


@dataclasses.dataclass
class Stream:
    """One generation of a concurrent run: its timing as the caller saw it and its token ids."""

    timing: Timing
    ids: list[int] = dataclasses.field(default_factory=list)


def equal_length_prompts(tokenize: Callable[[str], list[int]], count: int) -> list[list[int]]:
    """``count`` distinct benchmark prompts (token ids, BOS included) of the same token count as prompt 0."""
    chosen: list[list[int]] = []
    n = 0
    while len(chosen) < count:
        ids = tokenize(benchlib.prompt(n))
        if not chosen or len(ids) == len(chosen[0]):
            chosen.append(ids)
        n += 1
        if n > 100 * count:
            raise RuntimeError("could not find benchmark prompts of equal token count")
    return chosen


def _await_streams(done: list[threading.Event], cancels: list[threading.Event], limit: float) -> None:
    deadline = time.perf_counter() + limit
    if all(event.wait(max(0.0, deadline - time.perf_counter())) for event in done):
        return
    for cancel in cancels:
        cancel.set()
    for event in done:
        event.wait()
    raise benchlib.TooSlowError(f"{len(done)} concurrent generation(s) took over {limit:.0f}s")


def ours_concurrent(
    engine: Any, prompts: Sequence[list[int]], tokens: int, limit: float, late_after: int | None = None
) -> list[Stream]:
    """One generation per prompt on slots 0, 1, ... of our engine, all started at once; with ``late_after``, the
    second starts once the first has produced that many tokens (from the engine's thread, as a server would)."""
    from slm_runtime.engines.base import GeneratedToken, SamplingParams

    params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0)
    streams = [Stream(Timing(sent=0.0)) for _ in prompts]
    done = [threading.Event() for _ in prompts]
    cancels = [threading.Event() for _ in prompts]
    errors: list[BaseException] = []

    def begin(slot: int) -> None:
        streams[slot].timing.sent = time.perf_counter()
        engine.start(slot, prompts[slot], params, cancels[slot], functools.partial(sink, slot))

    def sink(slot: int, item: GeneratedToken | BaseException | None) -> None:
        stream = streams[slot]
        if item is None:
            if late_after is not None and slot == 0 and not streams[1].timing.sent:
                begin(1)  # the first ended before ``late_after`` tokens
            done[slot].set()
        elif isinstance(item, BaseException):
            errors.append(item)
        else:
            stream.timing.stamps.append(time.perf_counter())
            stream.timing.text += item.text
            stream.ids.append(item.token_id)
            if late_after is not None and slot == 0 and len(stream.ids) == late_after:
                begin(1)

    for slot in range(1 if late_after is not None else len(prompts)):
        begin(slot)
    _await_streams(done, cancels, limit)
    if errors:
        raise errors[0]
    return streams


def og_engine_concurrent(
    og_engine: Any,
    tokenizer: Any,
    prompts: Sequence[list[int]],
    tokens: int,
    limit: float,
    late_after: int | None = None,
) -> list[Stream]:
    """The same with ``og.Engine``: one Request per prompt, greedy, ``tokens`` new tokens, driven from this thread
    (the Engine's owner); ``late_after`` as in :func:`ours_concurrent`."""
    import numpy as np
    import onnxruntime_genai as og

    options = og.RequestOptions()
    options.set_max_session_tokens(max(512, max(len(p) for p in prompts) + tokens))
    streams = [Stream(Timing(sent=0.0)) for _ in prompts]
    decoders = [tokenizer.create_stream() for _ in prompts]
    requests: list[Any] = []
    turns: list[int] = []

    def begin(index: int) -> None:
        request = og_engine.create_request(options=options)
        turn = og.TurnOptions(request)
        turn.set_do_sample(False)
        turn.set_repetition_penalty(1.0)
        turn.set_max_generated_tokens(tokens)
        streams[index].timing.sent = time.perf_counter()
        turns.append(request.begin_turn(np.asarray(prompts[index], dtype=np.int32), turn))
        requests.append(request)

    for index in range(1 if late_after is not None else len(prompts)):
        begin(index)
    events = og_engine.create_event_buffer(4 * OG_STATIC_BATCH)
    start = time.perf_counter()
    failed: list[str] = []
    try:
        while og_engine.has_pending_requests() or len(requests) < len(prompts):
            if not og_engine.has_pending_requests():
                begin(len(requests))  # the first ended before ``late_after`` tokens
            for event in og_engine.run(events):
                if event.flags & og.EngineEventFlags.FAILED:
                    failed.append(f"{event.error_code} {event.finish_reason}")
                if not event.flags & og.EngineEventFlags.TOKEN:
                    continue
                index = next(i for i, request in enumerate(requests) if request == event.request)
                stream, token = streams[index], int(event.token)
                stream.timing.stamps.append(time.perf_counter())
                stream.timing.text += decoders[index].decode(token)
                stream.ids.append(token)
                if late_after is not None and index == 0 and len(stream.ids) == late_after:
                    begin(1)
            if time.perf_counter() - start > limit and not failed:
                for request, turn in zip(requests, turns, strict=True):
                    request.cancel_turn(turn)
                failed.append("too slow")
    finally:
        for request in requests:
            request.close()
    if failed == ["too slow"]:
        raise benchlib.TooSlowError(f"{len(prompts)} og.Engine request(s) took over {limit:.0f}s")
    if failed:
        raise RuntimeError(f"og.Engine failed: {failed}")
    return streams


def og_engine_mixed_lengths(model: Any, tokenize: Callable[[str], list[int]]) -> dict[str, Any]:
    """Two prompts of different token counts in one batch of a fresh ``og.Engine`` (it may end unhealthy): what
    each request's turn ended with, and the Engine's error if it raised."""
    import numpy as np
    import onnxruntime_genai as og

    og_engine = og.Engine(model)
    prompts = [tokenize("The capital of France is"), tokenize(benchlib.prompt(0))]
    finish: list[str] = []
    error = ""
    requests: list[Any] = []
    try:
        for prompt in prompts:
            request = og_engine.create_request()
            turn = og.TurnOptions(request)
            turn.set_do_sample(False)
            turn.set_max_generated_tokens(4)
            request.begin_turn(np.asarray(prompt, dtype=np.int32), turn)
            requests.append(request)
        events = og_engine.create_event_buffer(4 * OG_STATIC_BATCH)
        while og_engine.has_pending_requests():
            for event in og_engine.run(events):
                if event.flags & og.EngineEventFlags.TURN_FINISHED:
                    finish.append(f"{event.finish_reason.name} ({event.error_code.name})")
        og_engine.create_request()  # a healthy Engine takes another request
    except RuntimeError as exc:
        error = str(exc)
    finally:
        for request in requests:
            request.close()
    return {
        "prompt_tokens": [len(p) for p in prompts],
        "finish": finish,
        "ok": not error and all(f.startswith("MAX_GENERATED_TOKENS") for f in finish),
        "error": error,
    }


@dataclasses.dataclass
class Round:
    """One round of the concurrency measurement: per side, per stream count, the streams."""

    sides: dict[str, dict[int, list[Stream]]]
    cpu_ms_per_token: dict[str, dict[int, float]]
    late: dict[str, float]


def aggregate_tok_s(streams: Sequence[Stream]) -> float:
    start = min(s.timing.sent for s in streams)
    end = max(s.timing.stamps[-1] for s in streams if s.timing.stamps)
    return benchlib.ratio(sum(s.timing.tokens for s in streams), end - start)


class Concurrency:
    """Our engine (``--parallel`` = the most streams) and og.Engine on the baseline's model, side by side."""

    def __init__(self, model: Path, baseline: tuple[Any, Any], args: argparse.Namespace) -> None:
        import onnxruntime_genai as og

        self.args = args
        self.streams = sorted(args.streams)
        self.ours = load_ours(model, args.context_length, parallel=max(self.streams))
        self.tokenizer = baseline[1]
        self.og_engine = og.Engine(baseline[0])
        self.prompts = equal_length_prompts(self.ours.tokenize, max(self.streams))
        self.solo: list[list[int]] = []

    def capabilities(self) -> dict[str, int]:
        caps = self.og_engine.get_capabilities()
        return {
            "configured_max_batch_size": int(caps.configured_max_batch_size),
            "max_request_length": int(caps.max_request_length),
            "max_scheduled_tokens": int(caps.max_scheduled_tokens),
        }

    def limit(self, streams: int) -> float:
        return self.args.run_timeout * streams

    def warm_up(self) -> None:
        """Each prompt alone on our engine (the greedy reference), then one og.Engine request."""
        tokens = self.args.concurrency_tokens
        self.solo = [ours_concurrent(self.ours, [p], tokens, self.limit(1))[0].ids for p in self.prompts]
        og_engine_concurrent(self.og_engine, self.tokenizer, self.prompts[:1], tokens, self.limit(1))

    def side(self, name: str, prompts: Sequence[list[int]], late_after: int | None = None) -> list[Stream]:
        tokens, limit = self.args.concurrency_tokens, self.limit(len(prompts))
        if name == "ours":
            return ours_concurrent(self.ours, prompts, tokens, limit, late_after)
        return og_engine_concurrent(self.og_engine, self.tokenizer, prompts, tokens, limit, late_after)

    def round(self, run: int) -> Round:
        order = self.streams[run % len(self.streams) :] + self.streams[: run % len(self.streams)]
        names = ["ours", "og_engine"] if run % 2 else ["og_engine", "ours"]
        sides: dict[str, dict[int, list[Stream]]] = {"ours": {}, "og_engine": {}}
        cpu: dict[str, dict[int, float]] = {"ours": {}, "og_engine": {}}
        for count in order:
            for name in names:
                before = time.process_time()
                streams = sides[name][count] = self.side(name, self.prompts[:count])
                spent = time.process_time() - before
                cpu[name][count] = benchlib.ratio(spent * 1000, sum(s.timing.tokens for s in streams))
            log.info(
                "run %d, %d stream(s): ours %.1f tok/s, og.Engine %.1f tok/s (aggregate)",
                run,
                count,
                aggregate_tok_s(sides["ours"][count]),
                aggregate_tok_s(sides["og_engine"][count]),
            )
        late_after = max(1, self.args.concurrency_tokens // 4)
        late = {name: self.side(name, self.prompts[:2], late_after)[1].timing.ttft * 1000 for name in names}
        log.info("run %d, late arrival TTFT: ours %.0f ms, og.Engine %.0f ms", run, late["ours"], late["og_engine"])
        return Round(sides, cpu, late)

    def summarize(self, rounds: Sequence[Round]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name in ("ours", "og_engine"):
            figures: dict[str, Any] = {}
            for count in self.streams:
                runs = [r.sides[name][count] for r in rounds]
                figures[str(count)] = {
                    "aggregate_tok_s": benchlib.spread([aggregate_tok_s(s) for s in runs], 1),
                    "per_stream_tok_s": benchlib.spread(
                        [statistics.median(x.timing.decode_tok_s for x in s) for s in runs], 1
                    ),
                    "ttft_ms": benchlib.spread([statistics.median(x.timing.ttft for x in s) * 1000 for s in runs], 1),
                    "cpu_ms_per_token": benchlib.spread([r.cpu_ms_per_token[name][count] for r in rounds], 1),
                    "scaling": benchlib.spread(
                        [
                            benchlib.ratio(aggregate_tok_s(r.sides[name][count]), aggregate_tok_s(r.sides[name][1]))
                            for r in rounds
                        ]
                    ),
                }
            result[name] = figures
        result["og_engine_over_ours"] = {
            str(count): benchlib.spread(
                [
                    benchlib.ratio(
                        aggregate_tok_s(r.sides["og_engine"][count]), aggregate_tok_s(r.sides["ours"][count])
                    )
                    for r in rounds
                ]
            )
            for count in self.streams
        }
        result["identical_to_solo"] = {
            name: all(
                stream.ids == self.solo[index]
                for r in rounds
                for streams in r.sides[name].values()
                for index, stream in enumerate(streams)
            )
            for name in ("ours", "og_engine")
        }
        result["late_arrival_ttft_ms"] = {
            name: benchlib.spread([r.late[name] for r in rounds], 1) for name in ("ours", "og_engine")
        }
        return result

    def close(self) -> None:
        self.ours.close()


def measure_concurrency(model: Path, baseline: tuple[Any, Any], args: argparse.Namespace) -> dict[str, Any]:
    concurrency = Concurrency(model, baseline, args)
    try:
        with contextlib.suppress(benchlib.TooSlowError):
            concurrency.warm_up()
        rounds = benchlib.clean_runs(concurrency.round, args.concurrency_runs, args.foreign, args.settle)
        summary = concurrency.summarize(rounds.results) if rounds.results else {"skipped": "every round too slow"}
        return {
            "streams": concurrency.streams,
            "tokens": args.concurrency_tokens,
            "prompt_tokens": len(concurrency.prompts[0]),
            "og_engine_capabilities": concurrency.capabilities(),
            **summary,
            "og_engine_mixed_prompt_lengths": og_engine_mixed_lengths(baseline[0], concurrency.ours.tokenize),
            "noise": rounds.noise(),
        }
    finally:
        concurrency.close()


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
    result = summarize(runs.results) | {
        "process_rss_mib": benchlib.rss_mib_self(),
        "model_folder_mib": round(size / 2**20, 1),
        "noise": runs.noise(),
    }
    if args.concurrency_runs > 0:
        result["concurrency"] = measure_concurrency(model, baseline, args)
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, default=benchlib.default_onnx_model(), help="onnxruntime-genai folder")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--run-timeout", type=float, default=20, help="seconds per side before a run is abandoned")
    parser.add_argument(
        "--streams", type=stream_counts, default=[1, 2, 4, 8], help="concurrent stream counts (1 is always added)"
    )
    parser.add_argument("--concurrency-runs", type=int, default=3, help="rounds of the concurrency table (0: none)")
    parser.add_argument("--concurrency-tokens", type=int, default=32, help="new tokens per concurrent generation")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "onnx_engine.json")
    return parser.parse_args()


def stream_counts(text: str) -> list[int]:
    counts = {int(part) for part in text.split(",") if part.strip()} | {1}
    if min(counts) < 1:
        raise argparse.ArgumentTypeError("stream counts are positive")
    return sorted(counts)


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    params = {
        "runs": args.runs,
        "tokens": args.tokens,
        "context_length": args.context_length,
        "streams": args.streams,
        "concurrency_runs": args.concurrency_runs,
        "concurrency_tokens": args.concurrency_tokens,
    }
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
    concurrency = result.get("concurrency", {})
    for count in concurrency.get("streams", []) if "ours" in concurrency else []:
        ours, og_engine = concurrency["ours"][str(count)], concurrency["og_engine"][str(count)]
        print(
            f"  {count} stream(s): ours {ours['aggregate_tok_s']['median']:.1f} tok/s aggregate "
            f"({ours['per_stream_tok_s']['median']:.1f} per stream), og.Engine "
            f"{og_engine['aggregate_tok_s']['median']:.1f} ({og_engine['per_stream_tok_s']['median']:.1f}); "
            f"og.Engine/ours {concurrency['og_engine_over_ours'][str(count)]['median']:.2f}; CPU ms per token ours "
            f"{ours['cpu_ms_per_token']['median']:.1f}, og.Engine {og_engine['cpu_ms_per_token']['median']:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
