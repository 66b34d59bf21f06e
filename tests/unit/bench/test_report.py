"""bench/report.py: each section renders what its script writes (built here with the scripts' own summaries where
they have one, and through a JSON file as `make bench` leaves it), says "not run" under its heading without it, and
``--only`` rewrites one section in place or puts a new one where it belongs."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import benchlib
import concurrency
import onnx_engine
import overload
import prompt_reuse
import pytest
import report
import single_stream
from benchlib import Timing

# --- results as the scripts write them --------------------------------------------------------------------------


def timing(ttft: float, tokens: int = 4, gap: float = 0.02, text: str = "answer") -> Timing:
    return Timing(sent=0.0, stamps=[ttft + i * gap for i in range(tokens)], text=text)


def script_params(module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The params a script records when run with its defaults (paths and server choices apart)."""
    monkeypatch.setattr(sys, "argv", [f"{module.__name__}.py"])
    left_out = ("out", "model", "llama_server", "servers")
    return {k: v for k, v in vars(module.parse_args()).items() if k not in left_out} | {"model": "m.gguf"}


def as_written(result: dict[str, Any]) -> dict[str, Any]:
    """What reading the result back from its JSON file gives (integer keys become strings)."""
    written: dict[str, Any] = json.loads(json.dumps(result))
    return written


def reuse_run(later_ttft: float, turns: int, users: int, text: str = "answer") -> dict[str, list[list[Timing]]]:
    """One run of bench/prompt_reuse.py's scenarios: the first turn (user) 0.4 s to the first token, the rest
    ``later_ttft``."""

    def replay(count: int) -> list[Timing]:
        return [timing(0.4 if i == 0 else later_ttft, text=text) for i in range(count)]

    return {
        "multi_turn": [replay(turns)],
        "multi_turn_paused": [replay(turns)],
        "multi_turn_concurrent": [replay(turns) for _ in range(4)],
        "sequential": [replay(users)],
        "burst": [replay(users)],
    }


def prompt_reuse_result(params: dict[str, Any]) -> dict[str, Any]:
    turns, users, runs = params["turns"], params["users"], params["runs"]
    off = [reuse_run(0.4, turns, users) for _ in range(runs)]
    off[0]["burst"][0][1].text = "another answer"
    results = {"on": [reuse_run(0.04, turns, users) for _ in range(runs)], "off": off}
    return as_written({"params": params, "scenarios": prompt_reuse.summarize(results)})


def overload_result(params: dict[str, Any]) -> dict[str, Any]:
    def phase(tok_s: float, refused: float) -> dict[str, Any]:
        latency = {"p50": 1.5, "p99": 4.0} if refused else {"p50": math.nan, "p99": math.nan}
        return {
            "tok_s": tok_s,
            "answered": 40,
            "short": 0,
            "refusals": {"per_s": refused, "latency_ms": latency},
            "server": {
                "queue_ms_mean": 300.0 if refused else None,
                "busy": refused * params["window"],
                "sequences_per_step": 7.2 if refused else 7.0,
                "steps_per_s": 14.0,
                "tokens_per_step": 12.3,
                "cpu_cores": 1.9,
            },
            "foreign_cpu": 0.1,
        }

    rounds = [{"alone": phase(100.0, 0), "hammered": phase(95.0, 800.0)} for _ in range(params["rounds"])]
    return as_written(
        {
            "params": params,
            "rounds": rounds,
            "tok_s": {"alone": benchlib.spread([100.0], 2), "hammered": benchlib.spread([95.0], 2)},
            "ratio": benchlib.spread([0.95]),
            "refusals_per_s": benchlib.spread([800.0], 1),
            "queue": overload.queue_summary(
                [
                    overload.Place(0, 0.2, 0, 0.0, 0),
                    overload.Place(0, 0.3, 0, 0.0, 0),
                    overload.Place(3, 0.9, 2, 0.25, 1),
                ],
                [0.15, 0.18],
            ),
            "noise": {"foreign_cpu": benchlib.spread([0.1, 0.1])},
        }
    )


def sampling_result() -> dict[str, Any]:
    params = {"steps": 96, "runs": 3, "tokens": 48, "threads": 2, "context_length": 512, "parallel": 8}
    case = {"steps": 95, "chain_us": {"median": 900.0, "p90": 1100.0}, "draw_us": {"median": 150.0, "p90": 180.0}}
    decode = {
        "steps": {"chain": 120, "draw": 120},
        "step_ms": {"chain": 50.0, "draw": 41.7},
        "tok_s": {"chain": 20.0, "draw": 24.0},
        "decoder_cpu_ms": {"chain": 48.0, "draw": 40.0},
        "cpu_ratio": benchlib.spread([1.2]),
    }
    return {
        "params": params,
        "per_token": {
            "defaults": {"options": {}, **case, "ratio": 6.0, "deferred_share": 0.0},
            "top_k_1": {"options": {"top_k": 1}, **case, "ratio": 6.0, "deferred_share": 0.0125},
        },
        "decode": {"x4": {**decode, "ratio": benchlib.spread([1.2])}},
    }


def single_result(params: dict[str, Any]) -> dict[str, Any]:
    long = [(timing(0.030), timing(0.034)) for _ in range(3)]
    short = [(timing(0.010), timing(0.040)) for _ in range(3)]
    summary = single_stream.summarize(long) | {"short_prompt": {"prompt_tokens": 8, **single_stream.summarize(short)}}
    return as_written({"params": params, **summary})


def onnx_result() -> dict[str, Any]:
    measured = onnx_engine.Concurrency.__new__(onnx_engine.Concurrency)
    measured.streams, measured.solo = [1, 2], [[1, 2], [3, 4]]

    def streams(count: int, ttft: float) -> list[onnx_engine.Stream]:
        return [onnx_engine.Stream(timing(ttft * (i + 1)), [[1, 2], [3, 4]][i]) for i in range(count)]

    sides = {"ours": {1: streams(1, 0.1), 2: streams(2, 0.1)}, "og_engine": {1: streams(1, 0.1), 2: streams(2, 0.05)}}
    cpu = {"ours": {1: 25.0, 2: 25.0}, "og_engine": {1: 22.0, 2: 15.0}}
    rounds = [onnx_engine.Round(sides, cpu, {"ours": 120.0, "og_engine": 480.0})]
    mixed = {"prompt_tokens": [6, 47], "finish": ["FAILED (ENGINE_EXECUTION_FAILURE)"], "ok": False, "error": "bad"}
    concurrent = {
        "streams": [1, 2],
        "tokens": 4,
        "prompt_tokens": 47,
        "og_engine_capabilities": {"configured_max_batch_size": 4},
        **measured.summarize(rounds),
        "og_engine_mixed_prompt_lengths": mixed,
        "noise": benchlib.Clean(foreign=[0.1]).noise(),
    }
    pairs = [(timing(0.1), timing(0.1)) for _ in range(3)]
    params = {"model": "gemma3-270m-onnx-int4", "tokens": 64, "runs": 3}
    return as_written({"params": params, **onnx_engine.summarize(pairs), "concurrency": concurrent})


def concurrency_result(params: dict[str, Any]) -> dict[str, Any]:
    clients = params["clients"]
    names = ["slm-runtime", "llama-server"]
    points = {
        name: {n: concurrency.point([([timing(0.05 * n) for _ in range(n)], 1.0)], 4) for n in clients}
        for name in names
    }
    memory = {name: {"after_load": {"rss": 300.0}, "after_sweep": {"rss": 320.0}} for name in names}
    return as_written(
        {
            "params": params,
            "servers": names,
            "points": points,
            "ratio_vs": concurrency.ratios(points, clients),
            "memory_mib": memory | {"model_file_mib": 241.4},
        }
    )


def write(state: Path, name: str, result: dict[str, Any]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / f"{name}.json").write_text(json.dumps(result))


# --- tests ----------------------------------------------------------------------------------------------------


def anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    text = heading.removeprefix("## ").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_section_says_not_run_under_its_own_heading(tmp_path: Path) -> None:
    inputs = report.Inputs(tmp_path, tmp_path / "images")
    headings = [section.lines(inputs)[0] for section in report.SECTIONS.values()]
    assert all(heading.startswith("## ") for heading in headings)
    assert len(set(headings)) == len(headings)
    assert headings == [section.heading for section in report.SECTIONS.values()]
    for name in ("prompt_reuse", "sampling", "overload"):
        assert "Not run (`bench/" in "\n".join(report.SECTIONS[name].lines(inputs))
    assert {"operator", "constrained"} <= set(report.SECTIONS)


def test_prompt_reuse_heading_keeps_its_anchor() -> None:
    heading = report.SECTIONS["prompt_reuse"].heading
    assert anchor(heading) == "prompt-reuse-multi-turn-chat-and-a-shared-system-prompt"


def test_prompt_reuse_tables_from_the_scripts_summary(monkeypatch: pytest.MonkeyPatch) -> None:
    params = script_params(prompt_reuse, monkeypatch)
    text = "\n".join(report.section_prompt_reuse(prompt_reuse_result(params)))
    answers = params["runs"] * params["users"]
    assert f"| One conversation replayed turn by turn | turns 2–{params['turns']} | **10.0×** |" in text
    assert "| 4 conversations at once, each replayed turn by turn |" in text
    assert f"| One conversation, {params['think_seconds']:.1f} s between an answer and the next question |" in text
    assert f"| {answers - 1} / {answers} |" in text  # the burst's one differing answer
    assert "| 1 | 400 [400–400] | 400 [400–400] | 1.0× |" in text
    assert f"| {params['users']} | 40 [40–40] | 400 [400–400] | 10.0× |" in text


def test_overload_ratio_and_waits_by_place(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(report.section_overload(overload_result(script_params(overload, monkeypatch))))
    assert "Hammered ÷ alone tokens/s, per round: **0.950 [0.950–0.950]**." in text
    assert "| 0 | 2 | 250 [200–300] |" in text
    assert "| 3 | 1 | 900 [900–900] |" in text
    assert "1 of 3 requests saw more stream ends" in text
    assert "| refused (503) per s | – | 800.0 [800.0–800.0] |" in text
    assert "| 503s the server counted per s | – | 800.0 [800.0–800.0] |" in text
    assert "| sequences per engine step (whole phase) | 7.00 [7.00–7.00] | 7.20 [7.20–7.20] |" in text
    assert "| server process CPU, cores | 1.90 [1.90–1.90] | 1.90 [1.90–1.90] |" in text


def test_operator_stages_table_from_the_median_sample() -> None:
    def sample(slot: float) -> dict[str, Any]:
        stages = {"listing": 0.001, "slot": slot, "render": 0.002, "apply": 0.3}
        return {"stages": {k: {"mean": v} for k, v in stages.items()}, "apiserver_apply_seconds": 0.15}

    results = [{"count": 1000, "samples": [sample(9.0), sample(20.0), sample(30.0)]}, {"count": 100, "samples": [{}]}]
    table = report._stages_table(results)
    assert "| 1000 | 0.001 | 20.000 | 0.002 | 0.300 | 0.150 |" in table
    assert not any(line.startswith("| 100 |") for line in table)  # a run without stages has no row
    assert report._stages_table([{"count": 100, "samples": [{}]}]) == []


def test_sampling_ratios() -> None:
    text = "\n".join(report.section_sampling(sampling_result()))
    assert "| `defaults` | the defaults | 900.0 (1100.0) | 150.0 (180.0) | **6.0×** | 0.0% |" in text
    assert "| `top_k_1` | top_k 1 |" in text
    assert "| 4 | 50.0 / 41.7 | 20.0 / 24.0 | **1.200 [1.200–1.200]** | 1.200 [1.200–1.200] |" in text


def test_single_stream_short_prompt_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    text = "\n".join(report.section_single(single_result(script_params(single_stream, monkeypatch))))
    assert (
        "| TTFT ms, long prompt | 30.0 [30.0–30.0] | 34.0 [34.0–34.0] | HTTP − in-process **4.0 [4.0–4.0] ms** |"
        in text
    )
    assert "| TTFT ms, 8-token prompt | 10.0 [10.0–10.0] | 40.0 [40.0–40.0] | HTTP − in-process **30.0" in text
    assert "| decode tokens/s, 8-token prompt |" in text


def test_onnx_concurrency_table() -> None:
    text = "\n".join(report.section_onnx(onnx_result()))
    rows = [line for line in text.splitlines() if re.match(r"\| [12] \|", line)]
    assert len(rows) == 2
    assert rows[1].split(" | ")[6] == "150 / 75"  # the median stream's TTFT, ours / og.Engine
    assert rows[1].endswith("| 25.0 [25.0–25.0] / 15.0 [15.0–15.0] |")
    assert "TTFT 120 [120–120] ms with ours, 480 [480–480] ms with og.Engine" in text
    assert "in one batch: turns ended FAILED (ENGINE_EXECUTION_FAILURE); the Engine raised `bad`." in text
    assert "alone: ours yes, og.Engine yes." in text


def test_concurrency_at_sixteen_clients(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = script_params(concurrency, monkeypatch)
    assert params["clients"][-1] == 16
    lines = report.section_concurrency(concurrency_result(params), tmp_path)
    assert sum(line.startswith("| slm-runtime | 16 |") for line in lines) == 1
    assert f"At 16 clients there are more requests than slots: the ones beyond {params['parallel']} wait" in "\n".join(
        lines
    )
    assert (tmp_path / "concurrency_tok_s.png").stat().st_size > 0


def test_report_renders_each_present_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    write(state, "prompt_reuse", prompt_reuse_result(script_params(prompt_reuse, monkeypatch)))
    write(state, "sampling_cost", sampling_result())
    document = report.render(state, tmp_path / "benchmarks.md")
    assert "**10.0×**" in document
    assert "**6.0×**" in document
    assert "Not run (`bench/overload.py`)." in document


def test_only_rewrites_one_section_and_puts_a_new_one_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state, out = tmp_path / "state", tmp_path / "benchmarks.md"
    slot_gaps, constrained = report.SECTIONS["slot_gaps"].heading, report.SECTIONS["constrained"].heading
    onnx = report.SECTIONS["onnx"].heading  # before constrained decoding here, after it in the report's order
    out.write_text(f"# Benchmarks\n\n{slot_gaps}\n\nkept\n\n{onnx}\n\nalso kept\n\n{constrained}\n")
    write(state, "overload", overload_result(script_params(overload, monkeypatch)))
    write(state, "prompt_reuse", prompt_reuse_result(script_params(prompt_reuse, monkeypatch)))
    for name in ("overload", "prompt_reuse"):
        monkeypatch.setattr(sys, "argv", ["report.py", "--state", str(state), "--out", str(out), "--only", name])
        assert report.main() == 0
    lines = out.read_text().splitlines()
    reuse, over = report.SECTIONS["prompt_reuse"].heading, report.SECTIONS["overload"].heading
    assert lines.index(slot_gaps) < lines.index(reuse) < lines.index(over) < lines.index(onnx)
    assert lines[lines.index(slot_gaps) + 2] == "kept"
    assert lines[lines.index(onnx) + 2] == "also kept"
    assert lines[-1] == constrained

    (state / "overload.json").unlink()
    monkeypatch.setattr(sys, "argv", ["report.py", "--state", str(state), "--out", str(out), "--only", "overload"])
    assert report.main() == 0
    text = out.read_text()
    assert text.count(over) == 1
    assert f"{over}\n\nNot run (`bench/overload.py`).\n\n{onnx}\n" in text
