#!/usr/bin/env python3
"""Prompt reuse: multi-turn chat and a shared system prompt, with the prompt cache on against off, same run.

    .venv/bin/python bench/prompt_reuse.py [--model PATH] [--runs 2] [--tokens 64] [--threads 2] [--parallel 4]
        [--context-length 2048] [--turns 6] [--users 8] [--think-seconds 1] [--settle 5]
        [--out .state/bench/prompt_reuse.json]

Two ``slm-runtime serve`` processes on the same GGUF (Gemma 3 270M Q4_K_M by default), ``--prompt-cache true`` and
``--prompt-cache false``, everything else equal; runs alternate between them (which goes first alternates too).
Every request is a streaming ``POST /v1/chat/completions``, greedy, --tokens new tokens at most. Each run starts
its texts with the run number, so nothing is reused across runs.

- ``multi_turn``: one conversation (a ~100-token system prompt, then --turns questions, each sent with the whole
  history: the earlier questions and the answers the server gave), replayed turn by turn as a client would;
- ``multi_turn_paused``: the same with --think-seconds between an answer and the next question (a person reading
  and typing; the engine re-reads the kept answer while idle, so the next turn reads only its question);
- ``multi_turn_concurrent``: 4 such conversations at once, each its own client;
- ``shared_prefix``: a ~1,000-token system prompt shared by --users users with different questions: one user first,
  then the others one after another (``sequential``), and in a second pass one user then the rest at once (``burst``).

Figures: TTFT per turn (or per user) with reuse on and off, the ratio off/on (how many times faster the first token
comes with reuse), and whether the greedy answers were identical with reuse on and off.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import benchlib
import httpx
from benchlib import Server, Timing

log = logging.getLogger("bench.prompt_reuse")

SIDES = ("on", "off")
SCENARIOS = ("multi_turn", "multi_turn_paused", "multi_turn_concurrent", "sequential", "burst")

ASSISTANT = (
    "You are the archivist of the lighthouse on the northern cape. The lighthouse was built in 1851 by the harbour "
    "board, rebuilt after the storm of 1903, electrified in 1931 and automated in 1987, when the last keeper, "
    "Marta Ilse, retired. Its lamp is 41 metres above the sea and can be seen from 22 nautical miles. Answer "
    "questions about its history briefly and precisely, in plain sentences, and say so when you do not know. "
)
"""The multi-turn conversation's system prompt (about 100 tokens; run number in front, see ``system``)."""

QUESTIONS = (
    "When was the lighthouse built?",
    "Who built it?",
    "What happened in 1903?",
    "When did it get electric light?",
    "Who was the last keeper?",
    "How far can the lamp be seen?",
    "What changed in 1987?",
    "How high is the lamp?",
)

HANDBOOK = " ".join(
    f"Rule {i}: the keeper records the weather, the state of the lamp and every ship that passes at hour {i}."
    for i in range(1, 41)
)
"""The shared system prompt (about 1,000 tokens): a handbook every user's request starts with."""


def system(run: int, text: str) -> str:
    return f"Session {run}. {text}"


def chat_body(messages: list[dict[str, str]], tokens: int) -> dict[str, Any]:
    return {
        "model": "bench",
        "messages": messages,
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
    }


async def stream_chat(client: httpx.AsyncClient, body: dict[str, Any]) -> Timing:
    """POST a streaming chat completion; one timestamp per SSE event that carries content."""
    timing = Timing(sent=time.perf_counter(), prompt=json.dumps(body["messages"]))
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            choices = json.loads(line[5:]).get("choices") or []
            text = (choices[0].get("delta") or {}).get("content") if choices else None
            if text:
                timing.stamps.append(time.perf_counter())
                timing.text += text
    return timing


async def conversation(
    client: httpx.AsyncClient, run: int, index: int, turns: int, tokens: int, think: float = 0.0
) -> list[Timing]:
    """One chat replayed turn by turn: each turn sends the history with the server's own earlier answers, ``think``
    seconds after the answer before it (a person reading it and typing the next question)."""
    messages = [{"role": "system", "content": system(run * 10 + index, ASSISTANT)}]
    timings = []
    for turn in range(turns):
        if turn and think:
            await asyncio.sleep(think)
        messages.append({"role": "user", "content": QUESTIONS[(turn + index) % len(QUESTIONS)]})
        timing = await stream_chat(client, chat_body(messages, tokens))
        timings.append(timing)
        messages.append({"role": "assistant", "content": timing.text})
    return timings


async def shared_prefix(client: httpx.AsyncClient, run: int, users: int, tokens: int, burst: bool) -> list[Timing]:
    """The first user alone, then the others one by one (or all at once): the same long system prompt."""
    prefix = system(run, HANDBOOK)

    def body(user: int) -> dict[str, Any]:
        question = f"I am user {user}. " + QUESTIONS[user % len(QUESTIONS)]
        return chat_body([{"role": "system", "content": prefix}, {"role": "user", "content": question}], tokens)

    timings = [await stream_chat(client, body(0))]
    if burst:
        timings += await asyncio.gather(*(stream_chat(client, body(user)) for user in range(1, users)))
    else:
        for user in range(1, users):
            timings.append(await stream_chat(client, body(user)))
    return timings


async def one_run(server: Server, run: int, args: argparse.Namespace) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=args.users + 8)
    async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:
        single = await conversation(client, run, 0, args.turns, args.tokens)
        paused = await conversation(client, run, 9, args.turns, args.tokens, args.think_seconds)
        concurrent = await asyncio.gather(
            *(conversation(client, run, 1 + i, args.turns, args.tokens) for i in range(4))
        )
        sequential = await shared_prefix(client, run * 2, args.users, args.tokens, burst=False)
        burst = await shared_prefix(client, run * 2 + 1, args.users, args.tokens, burst=True)
    return {
        "multi_turn": [single],
        "multi_turn_paused": [paused],
        "multi_turn_concurrent": concurrent,
        "sequential": [sequential],
        "burst": [burst],
    }


def make_server(side: str, args: argparse.Namespace, model: Path) -> Server:
    port = benchlib.free_port()
    command = [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve", "--model", str(model)]
    command += ["--port", str(port), "--model-name", "bench", "--parallel", str(args.parallel)]
    command += ["--threads", str(args.threads), "--context-length", str(args.context_length)]
    command += ["--max-queue", str(args.users), "--temperature", "0", "--repeat-penalty", "1.0"]
    command += ["--prompt-cache", "true" if side == "on" else "false"]
    return Server(f"prompt-reuse-{side}", command, "/readyz", port)


def position_ttfts(runs: list[dict[str, Any]], scenario: str) -> list[list[float]]:
    """TTFT in ms by position (turn or user), pooled over runs and conversations."""
    pooled: list[list[float]] = []
    for run in runs:
        for timings in run[scenario]:
            for position, timing in enumerate(timings):
                while len(pooled) <= position:
                    pooled.append([])
                pooled[position].append(timing.ttft * 1000)
    return pooled


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for scenario in SCENARIOS:
        if scenario not in results["on"][0]:
            continue  # a result written before the scenario existed
        on, off = (position_ttfts(results[side], scenario) for side in SIDES)
        rows = []
        for position, (a, b) in enumerate(zip(on, off, strict=True)):
            rows.append(
                {
                    "position": position + 1,
                    "ttft_ms_on": benchlib.spread(a, 1),
                    "ttft_ms_off": benchlib.spread(b, 1),
                    "speedup": benchlib.ratio(benchlib.percentile(b, 50), benchlib.percentile(a, 50)),
                }
            )
        later_on = [value for values in on[1:] for value in values]
        later_off = [value for values in off[1:] for value in values]
        pairs = [
            (a.text, b.text)
            for run_on, run_off in zip(results["on"], results["off"], strict=True)
            for on_timings, off_timings in zip(run_on[scenario], run_off[scenario], strict=True)
            for a, b in zip(on_timings, off_timings, strict=True)
        ]
        summary[scenario] = {
            "by_position": rows,
            "later_speedup": benchlib.ratio(benchlib.percentile(later_off, 50), benchlib.percentile(later_on, 50)),
            "identical_answers": sum(a == b for a, b in pairs),
            "answers": len(pairs),
        }
    return summary


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--turns", type=int, default=6)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument(
        "--think-seconds", type=float, default=1.0, help="pause before each turn of the paused conversation"
    )
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "prompt_reuse.json")
    return parser.parse_args()


def main() -> int:
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    args = parse_args()
    model = args.model or benchlib.default_model()
    params = {key: value for key, value in vars(args).items() if key not in {"out", "model"}}
    result = benchlib.header("prompt_reuse", {**params, "model": model.name})
    servers = {side: make_server(side, args, model) for side in SIDES}
    results: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    try:
        for server in servers.values():
            server.start()
        for run in range(args.runs):
            order = SIDES if run % 2 == 0 else SIDES[::-1]
            for side in order:
                benchlib.settle(args.settle)
                results[side].append(asyncio.run(one_run(servers[side], run, args)))
                log.info("run %d reuse %s done", run, side)
    finally:
        for server in servers.values():
            server.stop()
    result["scenarios"] = summarize(results)
    for name, scenario in result["scenarios"].items():
        log.info(
            "%s: later turns/users %.1fx faster to the first token with reuse; %d/%d answers identical",
            name,
            scenario["later_speedup"] if not math.isnan(scenario["later_speedup"]) else math.nan,
            scenario["identical_answers"],
            scenario["answers"],
        )
    benchlib.finish(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
