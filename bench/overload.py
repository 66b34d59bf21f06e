#!/usr/bin/env python3
"""Overload: generation throughput while a full queue refuses impatient clients, and queue waits against places.

    .venv/bin/python bench/overload.py [--model PATH] [--rounds 3] [--parallel 8] [--max-queue 8] [--hammer 56]
        [--tokens 64] [--threads 2] [--context-length 2048] [--warm 5] [--window 20] [--settle 5] [--foreign 0.2]
        [--out .state/bench/overload.json]

One ``slm-runtime serve --parallel P --max-queue Q`` (Gemma 3 270M Q4_K_M by default, --threads threads) and two
phases, alternating over --rounds rounds (which goes first alternates too):

- ``alone``: P clients, each streaming ``POST /v1/completions`` (--tokens greedy tokens, a distinct prompt each)
  one after the other: every slot busy, nobody refused;
- ``hammered``: the same P clients and --hammer more, all of them impatient: a 503 is retried the moment it
  arrives, and an answered request is followed at once by the next. The slots stay busy, Q requests wait, and the
  rest are refused over and over.

Each phase runs --warm seconds (the queue fills), then --window seconds are measured; before each phase the script
waits up to --settle seconds for a quiet machine. The clients speak HTTP/1.1
over one kept-alive connection each, with a minimal client of their own (no HTTP library), so that what the
refused traffic costs is the server's, not the benchmark's; the client side still shares the machine.

Figures (in .state/bench/overload.json):

- ``tok_s``: tokens streamed to all clients per second of the window, per phase (median, min, max over rounds);
- ``ratio``: per round, hammered / alone (the target: >= 0.9);
- ``refusals``: 503s per second in the hammered window and the time from sending to the 503 (p50, p99);
- ``queue``: for every request answered in a hammered window, its *place* (answered requests sent before it that
  had no first token yet when it was sent: those ahead of it in the queue, or just reading their prompt) and its
  *wait* (sent to first token); ``by_place`` gives the wait per place. In a FIFO queue a request gets a slot at
  the (place + 1)-th stream end after it was sent at the latest, then reads its prompt in about
  ``unqueued_ttft_ms`` (the alone phase's median time to first token, when a slot is free at once). So
  ``excess_releases`` counts, per request, the stream ends before it got its slot (its first token minus the
  unqueued TTFT) beyond place + 1, and ``wait_beyond_place_ms`` is its wait minus the wait its place explains
  (until the (place + 1)-th stream end, plus the unqueued TTFT): positive values mean it waited longer than its
  place explains (a little may come from prompt reads that take longer than the median); ``overtaken`` counts the
  requests that a request sent later got its first token before (the order of first tokens against the order of
  arrival, which a FIFO queue keeps whatever the prompt reads take); each round's hammered phase has its own
  ``queue``;
- ``server``: the server's own counters per phase: mean queue time of the requests it admitted
  (``slm_request_queue_seconds``) and the 503s it counted (``slm_requests_total{outcome="busy"}``);
- ``noise``: the share of the CPUs that other work used during each kept round, and how many rounds were redone
  (a round during which other work used more than --foreign of the CPUs is redone, at most --rounds extra times,
  then the least disturbed --rounds are kept; each phase also records its own share, ``foreign_cpu``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger("bench.overload")

PATH = "/v1/completions"


@dataclass
class Attempt:
    """One request as its client saw it: sent, status line, token stamps, end."""

    sent: float
    status: int = 0
    answered: float = math.nan
    stamps: list[float] = field(default_factory=list)
    ended: float = math.nan

    @property
    def first(self) -> float:
        return self.stamps[0] if self.stamps else math.nan


class Connection:
    """One kept-alive HTTP/1.1 connection that POSTs JSON and reads the answer (Content-Length or chunked SSE)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        return self._reader, self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def post(self, body: bytes) -> Attempt:
        reader, writer = await self._open()
        head = f"POST {PATH} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
        attempt = Attempt(sent=time.perf_counter())
        writer.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        attempt.answered = time.perf_counter()
        attempt.status = int(status_line.split()[1])
        headers: dict[bytes, bytes] = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        if b"content-length" in headers:
            await reader.readexactly(int(headers[b"content-length"]))
        elif headers.get(b"transfer-encoding") == b"chunked":
            await self._events(reader, attempt)
        attempt.ended = time.perf_counter()
        if headers.get(b"connection") == b"close":
            self.close()
        return attempt

    @staticmethod
    async def _events(reader: asyncio.StreamReader, attempt: Attempt) -> None:
        """Read a chunked SSE body; a stamp for every event whose text is not empty."""
        pending = b""
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return
            pending += await reader.readexactly(size)
            await reader.readexactly(2)
            *events, pending = pending.split(b"\n\n")
            for event in events:
                if not event.startswith(b"data: {"):
                    continue
                choices = json.loads(event[6:]).get("choices") or []
                if choices and choices[0].get("text"):
                    attempt.stamps.append(time.perf_counter())


@dataclass
class Phase:
    """What one phase's clients did."""

    name: str
    start: float
    attempts: list[Attempt] = field(default_factory=list)


async def client(url: tuple[str, int], phase: Phase, numbers: itertools.count[int], tokens: int, stop: float) -> None:
    """Send requests one after the other until ``stop`` (a perf_counter time); a 503 is retried at once."""
    connection = Connection(*url)
    try:
        while time.perf_counter() < stop:
            body = json.dumps(benchlib.completion_body(benchlib.prompt(next(numbers)), tokens)).encode()
            try:
                phase.attempts.append(await connection.post(body))
            except (ConnectionError, asyncio.IncompleteReadError, ValueError):
                connection.close()
    finally:
        connection.close()


async def run_phase(name: str, url: tuple[str, int], clients: int, args: argparse.Namespace) -> Phase:
    """``args.parallel`` clients, then ``clients - parallel`` more half a second later, for warm + window seconds
    (and until every stream sent has ended)."""
    phase = Phase(name, time.perf_counter())
    stop = phase.start + args.warm + args.window
    numbers = itertools.count(int(phase.start * 1000) % 10**9)  # distinct prompts across phases and rounds
    tasks = [asyncio.create_task(client(url, phase, numbers, args.tokens, stop)) for _ in range(args.parallel)]
    if clients > args.parallel:
        await asyncio.sleep(0.5)
        tasks += [
            asyncio.create_task(client(url, phase, numbers, args.tokens, stop)) for _ in range(clients - args.parallel)
        ]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks), args.warm + args.window + args.run_timeout)
    except TimeoutError:
        raise benchlib.TooSlowError(f"the {name} phase overran by {args.run_timeout:.0f}s") from None
    return phase


def window_tok_s(phase: Phase, args: argparse.Namespace) -> float:
    begin = phase.start + args.warm
    end = begin + args.window
    window: float = args.window
    return sum(begin <= stamp < end for attempt in phase.attempts for stamp in attempt.stamps) / window


def refusals(phase: Phase, args: argparse.Namespace) -> dict[str, Any]:
    begin = phase.start + args.warm
    refused = [a for a in phase.attempts if a.status == 503 and begin <= a.sent < begin + args.window]
    latency = [(a.answered - a.sent) * 1000 for a in refused]
    return {
        "per_s": round(len(refused) / args.window, 1),
        "latency_ms": {
            "p50": round(benchlib.percentile(latency, 50), 2),
            "p99": round(benchlib.percentile(latency, 99), 2),
        },
    }


@dataclass(frozen=True)
class Place:
    """An answered request's place in the queue when it was sent, and how its wait compares with it."""

    place: int
    wait: float
    excess: int
    beyond: float
    overtaken: int
    """Requests sent after it (by more than :data:`SAME_MOMENT` s) whose first token came before its own."""


SAME_MOMENT = 0.005
"""Requests sent this close together may reach the server in either order."""


def unqueued_ttft(phase: Phase, args: argparse.Namespace) -> float:
    """The median time to first token of the requests answered in the window of an *alone* phase (a slot was free
    for each: their prompt read beside the other streams, no queue)."""
    begin = phase.start + args.warm
    waits = [a.first - a.sent for a in phase.attempts if a.status == 200 and a.stamps and a.sent >= begin]
    return statistics.median(waits) if waits else 0.0


def queue_places(phase: Phase, args: argparse.Namespace, ttft0: float) -> list[Place]:
    """The place, wait, excess releases and wait beyond its place of every request sent in the window (module
    docstring); ``ttft0``: the unqueued time to first token (:func:`unqueued_ttft`)."""
    begin = phase.start + args.warm
    answered = [a for a in phase.attempts if a.status == 200 and a.stamps]
    rows = []
    for attempt in answered:
        if not begin <= attempt.sent < begin + args.window:
            continue
        place = sum(1 for other in answered if other.sent < attempt.sent < other.first)
        ends = sorted(other.ended for other in answered if other.ended > attempt.sent and other is not attempt)
        slot_by = attempt.first - ttft0  # about when it got its slot
        releases = sum(1 for end in ends if end < slot_by)
        explained = (ends[place] - attempt.sent if place < len(ends) else math.inf) + ttft0
        wait = attempt.first - attempt.sent
        overtaken = sum(
            1 for other in answered if other.sent > attempt.sent + SAME_MOMENT and other.first < attempt.first
        )
        rows.append(Place(place, wait, releases - (place + 1), wait - explained, overtaken))
    return rows


def queue_summary(rows: list[Place], ttft0: list[float]) -> dict[str, Any]:
    by_place: dict[int, list[float]] = {}
    for row in rows:
        by_place.setdefault(row.place, []).append(row.wait * 1000)
    excess = [row.excess for row in rows]
    beyond = [row.beyond * 1000 for row in rows]
    return {
        "requests": len(rows),
        "unqueued_ttft_ms": benchlib.spread([t * 1000 for t in ttft0], 1),
        "by_place": {
            str(place): {"n": len(waits), "wait_ms": benchlib.spread(waits, 0)}
            for place, waits in sorted(by_place.items())
        },
        "excess_releases": {
            "max": max(excess) if excess else None,
            "positive": sum(e > 0 for e in excess),
            "over_one": sum(e > 1 for e in excess),
        },
        "wait_beyond_place_ms": {
            "p50": round(benchlib.percentile(beyond, 50), 1),
            "p99": round(benchlib.percentile(beyond, 99), 1),
            "max": round(max(beyond), 1) if beyond else math.nan,
        },
        "overtaken": {
            "requests": sum(row.overtaken > 0 for row in rows),
            "max": max((row.overtaken for row in rows), default=0),
        },
    }


COUNTED = {
    "slm_request_queue_seconds_sum": "queue_sum",
    "slm_request_queue_seconds_count": "queue_count",
    "slm_batch_sequences_count": "steps",
    "slm_batch_sequences_sum": "sequences",
    "slm_batch_tokens_sum": "step_tokens",
}
"""The server's metrics each phase reads before and after (summed over labels)."""


def server_counters(server: benchlib.Server) -> dict[str, float]:
    """The server's queue-time sum and count, its busy refusals, its engine steps (and the sequences and tokens
    they carried) so far, and the CPU seconds its process has used."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    values = {
        "busy": 0.0,
        "cpu_s": benchlib.process_cpu_seconds(server.process.pid) if server.process else 0.0,
        **dict.fromkeys(COUNTED.values(), 0.0),
    }
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTED:
                values[COUNTED[sample.name]] += sample.value
            elif sample.name == "slm_requests_total" and sample.labels.get("outcome") == "busy":
                values["busy"] += sample.value
    return values


def measure_phase(server: benchlib.Server, name: str, args: argparse.Namespace) -> tuple[dict[str, Any], Phase]:
    clients = args.parallel + (args.hammer if name == "hammered" else 0)
    benchlib.settle(args.settle)
    before = server_counters(server)
    foreign = benchlib.Foreign()
    began = time.monotonic()
    phase = asyncio.run(run_phase(name, ("127.0.0.1", server.port), clients, args))
    seconds = time.monotonic() - began
    share = foreign.share()
    after = server_counters(server)
    delta = {key: after[key] - before[key] for key in after}
    count = delta["queue_count"]
    result = {
        "tok_s": round(window_tok_s(phase, args), 2),
        "answered": sum(a.status == 200 for a in phase.attempts),
        "short": sum(a.status == 200 and len(a.stamps) < args.tokens for a in phase.attempts),
        "refusals": refusals(phase, args),
        "server": {
            "queue_ms_mean": round(delta["queue_sum"] / count * 1000, 1) if count else None,
            "busy": delta["busy"],
            # The whole phase (warm-up and window): how full the engine's steps were, how often it stepped, and
            # how much CPU the server process used (a core is 1.0).
            "sequences_per_step": round(delta["sequences"] / delta["steps"], 2) if delta["steps"] else None,
            "steps_per_s": round(delta["steps"] / seconds, 1),
            "tokens_per_step": round(delta["step_tokens"] / delta["steps"], 1) if delta["steps"] else None,
            "cpu_cores": round(delta["cpu_s"] / seconds, 2),
        },
        "foreign_cpu": share,
    }
    log.info(
        "%s: %.1f tok/s, %d answered, %.0f refusals/s, other work %.0f%% of the CPUs; engine %s",
        name,
        result["tok_s"],
        result["answered"],
        result["refusals"]["per_s"],
        share * 100,
        result["server"],
    )
    return result, phase


def runtime_server(model: Path, args: argparse.Namespace) -> benchlib.Server:
    port = benchlib.free_port()
    command = [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve", "--model", str(model)]
    command += ["--port", str(port), "--model-name", "bench", "--parallel", str(args.parallel)]
    command += ["--max-queue", str(args.max_queue), "--threads", str(args.threads)]
    command += ["--context-length", str(args.context_length), "--temperature", "0", "--repeat-penalty", "1.0"]
    return benchlib.Server("slm-runtime", command, "/readyz", port)


@dataclass
class Round:
    """Both phases of one round, and what the queue analysis needs of them."""

    results: dict[str, dict[str, Any]]
    ttft0: float
    places: list[Place]


def measure_round(server: benchlib.Server, number: int, args: argparse.Namespace) -> Round:
    order = ("alone", "hammered") if number % 2 else ("hammered", "alone")
    phases = {name: measure_phase(server, name, args) for name in order}
    results = {name: result for name, (result, _) in phases.items()}
    ttft0 = unqueued_ttft(phases["alone"][1], args)
    places = queue_places(phases["hammered"][1], args, ttft0)
    results["hammered"]["queue"] = queue_summary(places, [ttft0])
    ratio = benchlib.ratio(results["hammered"]["tok_s"], results["alone"]["tok_s"])
    log.info("round %d: hammered/alone %.3f", number, ratio)
    return Round(results, ttft0, places)


def measure(args: argparse.Namespace, model: Path) -> dict[str, Any]:
    server = runtime_server(model, args)
    try:
        server.start()
        asyncio.run(benchlib.wave(server.url, [benchlib.completion_body(benchlib.prompt(i), 8) for i in range(8)]))
        runs = benchlib.clean_runs(lambda n: measure_round(server, n, args), args.rounds, args.foreign, args.settle)
    finally:
        server.stop()
    rounds = [r.results for r in runs.results]
    hammered = [r["hammered"] for r in rounds]
    return {
        "rounds": rounds,
        "tok_s": {
            "alone": benchlib.spread([r["alone"]["tok_s"] for r in rounds], 2),
            "hammered": benchlib.spread([h["tok_s"] for h in hammered], 2),
        },
        "ratio": benchlib.spread([benchlib.ratio(r["hammered"]["tok_s"], r["alone"]["tok_s"]) for r in rounds]),
        "refusals_per_s": benchlib.spread([h["refusals"]["per_s"] for h in hammered], 1),
        "queue": queue_summary([p for r in runs.results for p in r.places], [r.ttft0 for r in runs.results]),
        "noise": runs.noise(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", type=Path, help="GGUF file (default: Gemma 3 270M Q4_K_M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=8, help="--parallel of the server (and the steady clients)")
    parser.add_argument("--max-queue", type=int, default=8, help="--max-queue of the server")
    parser.add_argument("--hammer", type=int, default=56, help="impatient clients added in the hammered phase")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--warm", type=float, default=5, help="seconds of each phase before the window")
    parser.add_argument("--window", type=float, default=20, help="seconds measured per phase")
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--run-timeout", type=float, default=120, help="seconds a phase may overrun before it fails")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "overload.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    benchlib.stop_on_sigterm()
    model = args.model or benchlib.default_model()
    params = {k: v for k, v in vars(args).items() if k not in ("out", "model")} | {"model": model.name}
    result = benchlib.header("overload", params)
    try:
        result |= measure(args, model)
    except (RuntimeError, httpx.HTTPError, TimeoutError, OSError) as error:
        log.error("overload benchmark failed: %s", error)
        return 1
    benchlib.finish(result, args.out)
    ratio, queue = result["ratio"], result["queue"]
    print(
        f"overload: hammered/alone tokens/s {ratio['median']:.3f} (min {ratio['min']:.3f}, max {ratio['max']:.3f}); "
        f"alone {result['tok_s']['alone']['median']:.1f} tok/s, hammered {result['tok_s']['hammered']['median']:.1f}; "
        f"{result['refusals_per_s']['median']:.0f} refusals/s; {queue['requests']} queued requests, "
        f"{queue['excess_releases']['positive']} waited past their place (max excess {queue['excess_releases']['max']})"
    )
    return 0 if not math.isnan(ratio["median"]) else 1


if __name__ == "__main__":
    sys.exit(main())
