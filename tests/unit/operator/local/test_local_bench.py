"""`slm bench` arithmetic: client-side time to first token, server-side token rates, medians."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from slm_operator.local.bench import measure, run_bench
from slm_operator.local.client import StreamChunk


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FakeGenerate:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[dict[str, Any]] = []

    def generate(self, model: str, prompt: str, options: Mapping[str, Any] | None = None) -> Iterator[StreamChunk]:
        self.calls.append(dict(options or {}))
        self.clock.now += 0.25  # time to first token
        yield StreamChunk(text="a", done=False)
        self.clock.now += 1.0
        yield StreamChunk(text="b", done=False)
        stats = {"prompt_eval_count": 10, "prompt_eval_duration": 50_000_000, "eval_count": 20, "eval_duration": 10**9}
        yield StreamChunk(text="", done=True, stats=stats)


def test_measure() -> None:
    clock = Clock()
    client = FakeGenerate(clock)
    run = measure(client, "m", "p", 20, clock=clock)
    assert run.ttft_seconds == 0.25 and run.total_seconds == 1.25
    assert run.tokens_per_second == 20.0 and run.prompt_tokens_per_second == 200.0
    assert (run.prompt_tokens, run.generated_tokens) == (10, 20)
    assert client.calls == [{"temperature": 0, "seed": 1, "num_predict": 20}]


def test_run_bench_warms_up_then_reports() -> None:
    client = FakeGenerate(Clock())
    report = run_bench(client, "m", runs=3, tokens=64, load_seconds=1.5)
    assert [c["num_predict"] for c in client.calls] == [8, 64, 64, 64]
    assert len(report.runs) == 3
    summary = report.as_dict()
    assert summary["load_seconds"] == 1.5 and summary["median"]["tokens_per_second"] == 20.0
    text = report.render()
    assert "load time: 1.50 s" in text and "median: 20.0 tokens/s" in text
    assert text.splitlines()[2].split() == ["RUN", "TTFT", "TOKENS/S", "PROMPT", "TOKENS/S", "TOKENS", "TOTAL"]
