"""`slm bench`: generation speed, time to first token and load time, measured through the HTTP API.

Each run streams one /api/generate of ``tokens`` tokens (greedy, fixed seed) after one unmeasured warm-up.
Time to first token is measured by the client (request sent -> first text chunk); prompt and generation
speed come from the server's own counters (prompt_eval_*, eval_*), as `ollama run --verbose` reports them.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from slm_operator.local.client import StreamChunk
from slm_operator.local.table import render_table

__all__ = ["DEFAULT_PROMPT", "BenchReport", "BenchRun", "GenerateClient", "measure", "run_bench"]

DEFAULT_PROMPT = "Write a short paragraph about the history of the bicycle."
NANOS = 1e9


class GenerateClient(Protocol):
    def generate(self, model: str, prompt: str, options: Mapping[str, Any] | None = None) -> Iterator[StreamChunk]: ...


@dataclass(frozen=True)
class BenchRun:
    """One measured generation."""

    ttft_seconds: float
    total_seconds: float
    prompt_tokens: int
    generated_tokens: int
    prompt_tokens_per_second: float
    tokens_per_second: float


@dataclass(frozen=True)
class BenchReport:
    """Every run, and the model load time when the bench started the server (None when it was running)."""

    model: str
    runs: list[BenchRun]
    load_seconds: float | None

    def median(self, field: str) -> float:
        return float(statistics.median(getattr(run, field) for run in self.runs))

    def as_dict(self) -> dict[str, Any]:
        summary = {
            name: self.median(name)
            for name in ("ttft_seconds", "tokens_per_second", "prompt_tokens_per_second", "total_seconds")
        }
        return {
            "model": self.model,
            "load_seconds": self.load_seconds,
            "median": summary,
            "runs": [asdict(run) for run in self.runs],
        }

    def render(self) -> str:
        rows = [
            [
                str(index),
                f"{run.ttft_seconds * 1000:.0f} ms",
                f"{run.tokens_per_second:.1f}",
                f"{run.prompt_tokens_per_second:.1f}",
                str(run.generated_tokens),
                f"{run.total_seconds:.2f} s",
            ]
            for index, run in enumerate(self.runs, 1)
        ]
        table = render_table(["RUN", "TTFT", "TOKENS/S", "PROMPT TOKENS/S", "TOKENS", "TOTAL"], rows)
        load = f"{self.load_seconds:.2f} s" if self.load_seconds is not None else "(server already running)"
        return (
            f"model: {self.model}\nload time: {load}\n{table}"
            f"median: {self.median('tokens_per_second'):.1f} tokens/s, "
            f"time to first token {self.median('ttft_seconds') * 1000:.0f} ms\n"
        )


def _rate(tokens: int, nanos: int) -> float:
    return tokens / (nanos / NANOS) if nanos > 0 else 0.0


def measure(client: GenerateClient, model: str, prompt: str, tokens: int, clock: Any = time.perf_counter) -> BenchRun:
    """One streamed generation of ``tokens`` tokens, greedy."""
    options = {"temperature": 0, "seed": 1, "num_predict": tokens}
    start = clock()
    first: float | None = None
    stats: dict[str, Any] = {}
    for chunk in client.generate(model, prompt, options):
        if first is None and chunk.text:
            first = clock()
        if chunk.done:
            stats = chunk.stats
    end = clock()
    prompt_tokens = int(stats.get("prompt_eval_count") or 0)
    generated = int(stats.get("eval_count") or 0)
    return BenchRun(
        ttft_seconds=(first if first is not None else end) - start,
        total_seconds=end - start,
        prompt_tokens=prompt_tokens,
        generated_tokens=generated,
        prompt_tokens_per_second=_rate(prompt_tokens, int(stats.get("prompt_eval_duration") or 0)),
        tokens_per_second=_rate(generated, int(stats.get("eval_duration") or 0)),
    )


def run_bench(
    client: GenerateClient,
    model: str,
    *,
    runs: int = 3,
    tokens: int = 128,
    prompt: str = DEFAULT_PROMPT,
    load_seconds: float | None = None,
) -> BenchReport:
    """A warm-up generation, then ``runs`` measured ones."""
    measure(client, model, prompt, min(tokens, 8))
    results = [measure(client, model, prompt, tokens) for _ in range(runs)]
    return BenchReport(model=model, runs=results, load_seconds=load_seconds)
