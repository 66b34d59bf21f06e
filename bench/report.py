#!/usr/bin/env python3
"""Render docs/benchmarks.md and its plots from the benchmark results in .state/bench/*.json.

    .venv/bin/python bench/report.py [--state .state/bench] [--out docs/benchmarks.md] [--only NAME]

Reads what the bench scripts wrote (each section names its result files in :data:`SECTIONS`: single_stream.json,
concurrency.json, slot_gaps.json, prompt_reuse.json, sampling_cost.json, constrained_decoding.json, overload.json,
onnx_engine.json, gateway.json, operator_scale.json, real_node.json, scale_to_zero.json, and pull_throughput.log);
a missing result is reported as "not run". ``--only NAME`` rewrites that one section of the existing --out from its
own results and leaves the others as they are (a section --out lacks goes where the document order puts it; the
machine-and-versions section lists the runs only when rendered itself). Plots (matplotlib, Agg, small PNGs) go to
docs/benchmarks/ next to the Markdown: aggregate tokens/s against clients per server, TTFT and inter-token latency
p50/p99 against clients, operator times against the number of SLMDeployments.
Every figure is the median over repeated runs with [min-max]; comparisons are ratios taken within one run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchlib
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

log = logging.getLogger("bench.report")

Result = dict[str, Any]
SERVER_STYLE = {"slm-runtime": "C0", "llama-cpp-python": "C1", "llama-server": "C2", "slm-runtime-fast": "C3"}


# --- formatting ----------------------------------------------------------------------------------------------


def num(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, int | float):
        return f"{value:.{digits}f}"
    return str(value)


def sp(cell: Mapping[str, Any] | None, digits: int = 1) -> str:
    """A spread as ``median [min–max]``."""
    if not cell or "median" not in cell:
        return "–"
    return f"{num(cell['median'], digits)} [{num(cell.get('min'), digits)}–{num(cell.get('max'), digits)}]"


def table(head: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def load(state: Path, name: str) -> Result | None:
    path = state / f"{name}.json"
    if not path.is_file():
        return None
    try:
        data: Result = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        log.warning("%s is not valid JSON (%s): treated as not run", path, error)
        return None
    return data


def not_run(title: str, how: str) -> list[str]:
    return [f"## {title}", "", f"Not run (`{how}`).", ""]


def noise(result: Result) -> str:
    before, after = result.get("load_before", []), result.get("load_after", [])
    cores = result.get("machine", {}).get("cores", "?")
    text = (
        f"Run {result.get('date', '?')} in {num(result.get('wall_seconds'), 0)} s; load average (1/5/15 min) "
        f"before {' / '.join(map(str, before))}, after {' / '.join(map(str, after))} on {cores} cores."
    )
    noise_cell = result.get("noise") or {}
    foreign = noise_cell.get("foreign_cpu") or {}
    if foreign.get("n"):
        redone = f"; {noise_cell['redone']} disturbed runs redone" if "redone" in noise_cell else ""
        text += (
            f" Other work's share of the CPUs during the kept runs: median {foreign['median']:.0%}, max "
            f"{foreign['max']:.0%} ({foreign['n']} runs{redone})."
        )
    return text


# --- plots ---------------------------------------------------------------------------------------------------


def log_x(ax: Any, ticks: list[int]) -> None:
    """A log x axis labelled only at ``ticks``, in plain numbers."""
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def log_y(ax: Any) -> None:
    """A log y axis labelled at 1, 2 and 5 times the powers of ten, in plain numbers."""
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def save(fig: Any, path: Path, bottom: float = 0.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return path.name


def client_counts(result: Result) -> list[int]:
    """Every client count of a concurrency result, over all servers."""
    return sorted({int(n) for cells in result["points"].values() for n in cells})


def mark_slots(ax: Any, result: Result) -> None:
    """A dotted line at the servers' slot count when more clients than that were measured (the rest queue)."""
    parallel = result["params"]["parallel"]
    if client_counts(result)[-1] > parallel:
        ax.axvline(parallel, color="grey", linestyle=":", linewidth=1, label=f"{parallel} slots")


def plot_tok_s(result: Result, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name in result["servers"]:
        cells = result["points"][name]
        clients = sorted(int(n) for n in cells)
        med = [cells[str(n)]["tok_s"]["median"] for n in clients]
        low = [m - cells[str(n)]["tok_s"]["min"] for m, n in zip(med, clients, strict=True)]
        high = [cells[str(n)]["tok_s"]["max"] - m for m, n in zip(med, clients, strict=True)]
        ax.errorbar(clients, med, yerr=[low, high], marker="o", capsize=3, label=name, color=SERVER_STYLE.get(name))
    ax.set(xlabel="concurrent clients", ylabel="aggregate tokens/s", ylim=(0, None))
    log_x(ax, client_counts(result))
    mark_slots(ax, result)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Aggregate decode throughput (median, min-max bars)", fontsize=10)
    return save(fig, path)


def plot_latency(result: Result, path: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    for ax, key, title in zip(axes, ("ttft_ms", "itl_ms"), ("Time to first token", "Inter-token latency"), strict=True):
        for name in result["servers"]:
            cells = result["points"][name]
            clients = sorted(int(n) for n in cells)
            color = SERVER_STYLE.get(name)
            ax.plot(clients, [cells[str(n)][key]["p50"] for n in clients], "o-", color=color, label=f"{name} p50")
            ax.plot(clients, [cells[str(n)][key]["p99"] for n in clients], "s--", color=color, label=f"{name} p99")
        ax.set(xlabel="concurrent clients", ylabel="ms", title=title)
        log_x(ax, client_counts(result))
        log_y(ax)
        mark_slots(ax, result)
        ax.grid(alpha=0.3)
        ax.title.set_fontsize(10)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7, frameon=False)
    return save(fig, path, bottom=0.14)


def _settings(result: Result) -> list[Mapping[str, Any]]:
    """The client-rate-limit settings of an operator_scale result (older results: one, unnamed)."""
    return list(result.get("settings") or [{"name": "default", "results": result.get("results", [])}])


def plot_operator(result: Result, path: Path) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    all_counts: list[int] = []
    for setting in _settings(result):
        rows = sorted(setting.get("results", []), key=lambda r: r.get("count", 0))
        counts = [r.get("count", 0) for r in rows]
        all_counts += counts
        name = setting.get("name", "?")
        ready = [(r.get("seconds_to_ready") or {}).get("median", math.nan) for r in rows]
        bare = [((r.get("bare") or {}).get("seconds_to_available") or {}).get("median", math.nan) for r in rows]
        (line,) = ax.plot(counts, ready, marker="o", label=f"operator: all Ready ({name} limits)")
        ax.plot(counts, bare, marker="x", linestyle="--", color=line.get_color(), label=f"bare: all Available ({name})")
    ax.set(xlabel="SLMDeployments applied at once", ylabel="seconds", ylim=(0, None))
    if all_counts and min(all_counts) > 0 and max(all_counts) >= 20 * min(all_counts):
        log_x(ax, sorted(set(all_counts)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("Operator vs bare client: time until all are serving (median)", fontsize=10)
    return save(fig, path)


# --- sections ------------------------------------------------------------------------------------------------


def section_single(result: Result | None) -> list[str]:
    title = "Single stream: our runtime over HTTP vs llama-cpp-python in-process"
    if result is None:
        return not_run(title, "bench/single_stream.py")
    p = result["params"]
    lines = [
        f"## {title}",
        "",
        f"`llama_cpp.Llama.create_completion(stream=True)` in the benchmark process against `slm-runtime serve "
        f"--parallel {p['parallel']} --prompt-cache false` with a streaming `POST /v1/completions` over loopback "
        f"(neither side reuses a cached prompt); {p['tokens']} new tokens, greedy, {p['threads']} threads, "
        f"{p['runs']} alternating runs after a warm-up.",
        "",
    ]
    short = result.get("short_prompt")
    cases = [("long prompt", result), (f"{short['prompt_tokens']}-token prompt", short)] if short else [("", result)]
    rows = [row for name, case in cases for row in _single_rows(f", {name}" if name else "", case)]
    lines += table(["", "in-process llama-cpp-python", "slm-runtime over HTTP", "per-run comparison"], rows)
    same = ", ".join(
        f"{name + ' ' if name else ''}{case.get('same_text')} of {len(case['tokens']['http'])}" for name, case in cases
    )
    lines += [""]
    if short:
        lines += [
            f"The short prompt is the first {short['prompt_tokens']} tokens of the long one (BOS included), from the "
            "same alternating runs: its prompt is read in a few milliseconds, so what the server adds before the "
            "first token shows in the TTFT difference.",
            "",
        ]
    lines += [
        f"Runs with identical text on both sides: {same} (greedy output of this small model flips between "
        f"near-tied tokens when batch shapes differ). {noise(result)}",
        "",
    ]
    return lines


def _single_rows(label: str, case: Mapping[str, Any]) -> list[list[str]]:
    d, t = case["decode_tok_s"], case["ttft_ms"]
    return [
        [
            f"decode tokens/s{label}",
            sp(d["in_process"]),
            sp(d["http"]),
            f"ratio HTTP/in-process **{sp(case['ratio'], 3)}**",
        ],
        [
            f"TTFT ms{label}",
            sp(t["in_process"]),
            sp(t["http"]),
            f"HTTP − in-process **{sp(case['ttft_overhead_ms'])} ms**",
        ],
    ]


def _concurrency_rows(result: Result) -> list[list[str]]:
    rows = []
    for name in result["servers"]:
        for n, cell in sorted(result["points"][name].items(), key=lambda kv: int(kv[0])):
            vs = result["ratio_vs"].get(name, {}).get(n)
            rows.append(
                [
                    name,
                    n,
                    sp(cell["tok_s"]),
                    f"{num(cell['ttft_ms']['p50'], 0)} / {num(cell['ttft_ms']['p99'], 0)}",
                    f"{num(cell['itl_ms']['p50'])} / {num(cell['itl_ms']['p99'])}",
                    sp(vs, 2) if vs else "",
                ]
            )
    return rows


def section_concurrency(result: Result | None, images: Path) -> list[str]:
    title = "Concurrency sweep: slm-runtime vs llama-cpp-python's server vs llama-server"
    if result is None:
        return not_run(title, "bench/concurrency.py")
    p = result["params"]
    lines = [
        f"## {title}",
        "",
        f"N clients start together, each streaming one `POST /v1/completions` of {p['tokens']} tokens (greedy, "
        f"same prompts on every server); {p['runs']} runs, server order rotating. Every server has {p['threads']} "
        f"threads; slm-runtime and llama-server have {p['parallel']} slots of {p['context_length']} tokens; "
        "llama-cpp-python's server runs one request at a time. `slm-runtime` is the default, batch-invariant "
        "mode (greedy output independent of load: no weight repacking, no flash attention, see "
        "[batching.md](batching.md)); `slm-runtime-fast` is `--batch-invariant false`, with llama.cpp's repacked "
        "kernels and flash attention like llama-server. No server reuses cached prompts (slm-runtime "
        "`--prompt-cache false`, llama-server `cache_prompt: false`; every prompt starts with its own number anyway).",
        "",
    ]
    queued = [n for n in client_counts(result) if n > p["parallel"]]
    if queued:
        lines += [
            f"At {', '.join(map(str, queued))} clients there are more requests than slots: the ones beyond "
            f"{p['parallel']} wait in slm-runtime's and llama-server's queues for a slot to free (their TTFT includes "
            "that wait), as every request does at more than one client with llama-cpp-python's server.",
            "",
        ]
    for name, why in result.get("skipped", {}).items():
        lines += [f"**{name} skipped:** {why}.", ""]
    head = ["server", "clients", "aggregate tok/s", "TTFT p50 / p99 ms", "ITL p50 / p99 ms", "ours ÷ this (tok/s)"]
    lines += table(head, _concurrency_rows(result))
    lines += [
        "",
        f"![tokens/s vs clients](benchmarks/{plot_tok_s(result, images / 'concurrency_tok_s.png')})",
        "",
        f"![TTFT and ITL vs clients](benchmarks/{plot_latency(result, images / 'concurrency_latency.png')})",
        "",
    ]
    short = {
        f"{name} at {n}": cell["short_requests"]
        for name, cells in result["points"].items()
        for n, cell in cells.items()
        if cell.get("short_requests")
    }
    abandoned = {
        f"{name} at {n}": cell["abandoned_runs"]
        for name, cells in result["points"].items()
        for n, cell in cells.items()
        if cell.get("abandoned_runs")
    }
    if abandoned:
        listed = ", ".join(f"{where}: {count}" for where, count in abandoned.items())
        lines += [f"**Waves abandoned (over the time limit in every attempt, left out):** {listed}.", ""]
    if short:
        listed = ", ".join(f"{where}: {count}" for where, count in short.items())
        lines += [f"**Requests that ended before {p['tokens']} tokens (EOS):** {listed}.", ""]
    agree = result.get("same_text_as_slm_runtime", {})
    if agree:
        shares = ", ".join(f"{name} {share:.0%}" for name, share in agree.items() if not math.isnan(share))
        lines += [
            f"Requests whose text equals slm-runtime's for the same prompt: {shares}. Informational only: greedy "
            "decoding of a 270M model flips between near-tied tokens on tiny numeric differences (other batch "
            "shapes, another build of the same llama.cpp), so this is below 100% even when every server is right; "
            "every server produced its full token count unless the table's figures say otherwise.",
            "",
        ]
    return [*lines, noise(result), ""]


def _memory_row(label: str, after_load: Mapping[str, Any], after: Mapping[str, Any], model_mib: Any) -> list[str]:
    rss = after.get("rss")
    share = f"{rss / model_mib:.1f}×" if isinstance(rss, int | float) and model_mib else "–"
    return [
        label,
        num(after_load.get("rss")),
        num(rss),
        share,
        f"{num(after.get('anon'))} / {num(after.get('file'))}",
        num(after.get("peak")),
    ]


def section_memory(single: Result | None, conc: Result | None) -> list[str]:
    lines = ["## Memory", ""]
    if conc is None and single is None:
        return [*lines, "Not run.", ""]
    rows = []
    sizes = [r["memory_mib"].get("model_file_mib") for r in (conc, single) if r is not None]
    model_mib = next((size for size in sizes if size), None)
    if conc is not None:
        memory = conc["memory_mib"]
        for name in conc["servers"]:
            slots = f" (--parallel {conc['params']['parallel']})" if name != "llama-cpp-python" else ""
            cells = memory[name]
            rows.append(_memory_row(name + slots, cells.get("after_load", {}), cells.get("after_sweep", {}), model_mib))
    if single is not None:
        label = f"slm-runtime (--parallel {single['params']['parallel']}, single stream)"
        rows.append(_memory_row(label, {}, single["memory_mib"]["runtime_server"], model_mib))
    head = ["server", "RSS after load", "RSS after runs", "÷ model file", "anon / file-backed", "peak"]
    return [
        *lines,
        *table(head, rows),
        "",
        f"MiB, the server's whole process tree, from /proc. Model file: {num(model_mib)} MiB; it is mmapped, so its "
        "pages count as file-backed (shared with the page cache), once per mapping.",
        "",
    ]


def section_onnx(result: Result | None) -> list[str]:
    title = "ONNX: our onnxruntime-genai engine vs onnxruntime-genai's own loop"
    if result is None:
        return not_run(title, "bench/onnx_engine.py")
    if "skipped" in result:
        return [f"## {title}", "", f"Not run: {result['skipped']}.", ""]
    p, d, t = result["params"], result["decode_tok_s"], result["ttft_ms"]
    rows = [
        ["decode tokens/s", sp(d["baseline"]), sp(d["ours"]), f"ratio ours/baseline **{sp(result['ratio'], 3)}**"],
        ["TTFT ms", sp(t["baseline"]), sp(t["ours"]), f"difference {sp(result['ttft_overhead_ms'])} ms"],
    ]
    return [
        f"## {title}",
        "",
        f"Both in one process on `{p['model']}` (CPU provider, onnxruntime's default threads), {p['tokens']} "
        f"tokens, greedy, {p['runs']} alternating runs after a warm-up.",
        "",
        *table(["", "og.Generator loop", "slm_runtime engine", "per-run comparison"], rows),
        "",
        f"Model folder {num(result.get('model_folder_mib'))} MiB; this process (both models loaded) "
        f"{num(result.get('process_rss_mib', {}).get('rss'))} MiB RSS. {noise(result)}",
        "",
        *_onnx_concurrency(result.get("concurrency")),
    ]


def _onnx_concurrency(conc: Mapping[str, Any] | None) -> list[str]:
    """bench/onnx_engine.py's ``concurrency``: the engine we ship against og.Engine, 1 to N streams together."""
    if not conc:
        return []
    intro = (
        f"**Concurrency:** {', '.join(map(str, conc['streams']))} streams started together, "
        f"{conc['tokens']} tokens each, greedy, prompts of {conc['prompt_tokens']} tokens (the same count for all; "
        "og.Engine with different counts: below). *Ours*: the engine we ship (`--parallel` = the most streams), "
        "one `og.Generator` per slot on its own thread, no batching; *og.Engine*: onnxruntime-genai's "
        "request-level engine on the baseline's model, on CPU a static batch of up to "
        f"{conc.get('og_engine_capabilities', {}).get('configured_max_batch_size', '?')} requests begun together."
    )
    if "skipped" in conc:
        return [intro, "", f"Not measured: {conc['skipped']}.", ""]
    ours, og_engine, ratio = conc["ours"], conc["og_engine"], conc["og_engine_over_ours"]
    rows = [
        [
            str(n),
            sp(ours[str(n)]["aggregate_tok_s"]),
            sp(ours[str(n)]["per_stream_tok_s"]),
            sp(og_engine[str(n)]["aggregate_tok_s"]),
            sp(og_engine[str(n)]["per_stream_tok_s"]),
            f"**{sp(ratio[str(n)], 2)}**",
            f"{num(ours[str(n)]['ttft_ms']['median'], 0)} / {num(og_engine[str(n)]['ttft_ms']['median'], 0)}",
            f"{sp(ours[str(n)]['cpu_ms_per_token'])} / {sp(og_engine[str(n)]['cpu_ms_per_token'])}",
        ]
        for n in conc["streams"]
    ]
    head = [
        "streams",
        "ours aggregate tok/s",
        "ours per stream",
        "og.Engine aggregate tok/s",
        "og.Engine per stream",
        "og.Engine ÷ ours (aggregate, per round)",
        "TTFT ms ours / og.Engine",
        "CPU ms per token ours / og.Engine",
    ]
    identical = conc.get("identical_to_solo", {})
    same = ", ".join(f"{NAMES_ONNX.get(k, k)} {'yes' if v else '**no**'}" for k, v in identical.items())
    late = conc.get("late_arrival_ttft_ms", {})
    mixed = conc.get("og_engine_mixed_prompt_lengths") or {}
    lines = [
        intro,
        "",
        *table(head, rows),
        "",
        "Per stream: the median stream's decode tokens/s; CPU: this process's CPU time (every thread) over the "
        f"tokens, the figure other work on the machine disturbs least. Every stream's tokens equal its prompt "
        f"generated alone: {same or '–'}.",
        "",
    ]
    if late:
        lines += [
            "A late arrival (a second request sent once the first has a quarter of its tokens): its TTFT "
            f"{sp(late.get('ours'), 0)} ms with ours, {sp(late.get('og_engine'), 0)} ms with og.Engine (the static "
            "batch makes it wait until the first request has finished).",
            "",
        ]
    if mixed:
        outcome = (
            "both finished"
            if mixed.get("ok")
            else f"turns ended {', '.join(mixed.get('finish') or ['–'])}"
            + (f"; the Engine raised `{mixed['error']}`" if mixed.get("error") else "")
        )
        lines += [
            f"og.Engine with two prompts of different token counts ({', '.join(map(str, mixed['prompt_tokens']))}) "
            f"in one batch: {outcome}.",
            "",
        ]
    return [*lines, f"Concurrency rounds: {_case_noise(conc)}", ""]


NAMES_ONNX = {"ours": "ours", "og_engine": "og.Engine"}


def section_slot_gaps(result: Result | None) -> list[str]:
    title = "Slot gaps: packed slots, spread slots with fillers, without"
    if result is None:
        return not_run(title, "bench/slot_gaps.py")
    p, tok_s, ratios = result["params"], result["tok_s"], result["ratio_to_packed"]
    labels = {
        "packed": "slots 0, 1, 2, 3",
        "spread": "slots 0, 2, 4, 6, gaps filled",
        "spread_unfilled": "slots 0, 2, 4, 6, fillers off",
    }
    rows = [[labels[name], sp(tok_s[name]), f"**{sp(ratios[name], 2)}**"] for name in labels]
    return [
        f"## {title}",
        "",
        f"One engine in process (`--parallel 8`, {p['threads']} threads), four greedy generations of {p['tokens']} "
        f"tokens started together, {p['runs']} runs of the three layouts in rotating order. llama.cpp decodes only "
        "consecutive sequence ids in one pass over the weights; see docs/batching.md.",
        "",
        *table(["layout", "aggregate tok/s", "÷ packed (per run)"], rows),
        "",
        noise(result),
        "",
    ]


def section_constrained(result: Result | None) -> list[str]:
    title = "Constrained decoding: a forced tool call under its grammar vs free generation"
    if result is None:
        return not_run(title, "bench/constrained_decoding.py")
    p = result["params"]
    rows = []
    for key, case in result["cases"].items():
        temperature, concurrency = key.removeprefix("t").split("_x")
        tok_s, ratios = case["tok_s"], case["ratio_to_free"]
        rows.append(
            [
                f"T={temperature}, {concurrency} seq.",
                sp(tok_s["free"]),
                sp(tok_s["grammar"]),
                f"**{sp(ratios['grammar'], 2)}**",
                sp(tok_s["masked"]),
                sp(ratios["masked"], 2),
                case["complete"]["grammar"],
                f"{case['refused_share']:.0%} / {case['masked_share']:.0%}",
            ]
        )
    head = [
        "case",
        "free tok/s",
        "grammar tok/s",
        "÷ free",
        "mask every token",
        "÷ free",
        "complete",
        "refused / masked",
    ]
    return [
        f"## {title}",
        "",
        f"One engine in process (`--parallel 4`, {p['threads']} threads), the same tool-calling prompt, up to "
        f"{p['tokens']} tokens per sequence, {p['runs']} runs of the three variants in rotating order. Grammar: a "
        "forced call of one of three functions (JSON schema `anyOf` of `{name: const, arguments: {...}}` with nested "
        "objects, enums, arrays, integers, booleans). Tokens/s per sequence while all the wave's sequences generate. "
        "*Mask every token* is the grammar inside llama.cpp's sampler chain, as the engine sampled before the grammar "
        "sampler (runtime/slm_runtime/engines/constrained.py). *Complete*: grammar outputs that closed within the "
        "token limit and validate against the schema (the rest were still adding array items: the 270M base model "
        "repeats). *Refused*: tokens whose first choice the grammar refused; *masked*: those that needed the "
        "first-byte mask rather than a pool of the best candidates. Runs are kept or redone per case.",
        "",
        *table(head, rows),
        "",
        noise({**result, "noise": {}}),
        "",
        *[f"- {key}: {_case_noise(case)}" for key, case in result["cases"].items()],
        "",
    ]


PROMPT_REUSE_SCENARIOS = {  # bench/prompt_reuse.py's scenarios: what each replays, what a row of it is
    "multi_turn": ("One conversation replayed turn by turn", "turn"),
    "multi_turn_paused": ("One conversation, {think} s between an answer and the next question", "turn"),
    "multi_turn_concurrent": ("{conversations} conversations at once, each replayed turn by turn", "turn"),
    "sequential": ("A shared system prompt: one user, then the others one after another", "user"),
    "burst": ("A shared system prompt: one user, then the others all at once", "user"),
}


def section_prompt_reuse(result: Result | None) -> list[str]:
    title = "Prompt reuse: multi-turn chat and a shared system prompt"
    if result is None:
        return not_run(title, "bench/prompt_reuse.py")
    p, scenarios = result["params"], result["scenarios"]
    names = {
        key: what.format(
            conversations=scenarios[key]["answers"] // max(1, p["runs"] * len(scenarios[key]["by_position"])),
            think=num(p.get("think_seconds"), 1),
        )
        for key, (what, _) in PROMPT_REUSE_SCENARIOS.items()
        if key in scenarios
    }
    summary = [
        [
            names[key],
            f"{PROMPT_REUSE_SCENARIOS[key][1]}s 2–{len(scenario['by_position'])}",
            f"**{num(scenario['later_speedup'], 1)}×**",
            f"{scenario['identical_answers']} / {scenario['answers']}",
        ]
        for key, scenario in scenarios.items()
        if key in names
    ]
    lines = [
        f"## {title}",
        "",
        f"Two `slm-runtime serve --parallel {p['parallel']}` processes on the same GGUF, `--prompt-cache true` and "
        f"`--prompt-cache false`, everything else equal ({p['threads']} threads, {p['context_length']} tokens per "
        f"slot); {p['runs']} runs alternating between them. Every request is a streaming `POST "
        f"/v1/chat/completions`, greedy, up to {p['tokens']} new tokens; each run starts its texts with its number, "
        f"so nothing is reused across runs. Multi-turn: a system prompt and {p['turns']} questions, each turn sent "
        "with the whole history (the earlier questions and the server's own answers), as a chat client does. "
        f"Shared system prompt: the long handbook of `bench/prompt_reuse.py` before each of {p['users']} users' "
        "questions. TTFT in ms by turn or user, median [min–max] over runs (and conversations); *off ÷ on*: how "
        "many times sooner the first token comes with reuse (ratio of the medians).",
        "",
        *table(["scenario", "over", "TTFT off ÷ on", "identical greedy answers, on vs off"], summary),
        "",
    ]
    for key, scenario in scenarios.items():
        if key not in names:
            continue
        row_name = PROMPT_REUSE_SCENARIOS[key][1]
        rows = [
            [str(row["position"]), sp(row["ttft_ms_on"], 0), sp(row["ttft_ms_off"], 0), f"{num(row['speedup'], 1)}×"]
            for row in scenario["by_position"]
        ]
        lines += [f"**{names[key]}:**", "", *table([row_name, "reuse on", "reuse off", "off ÷ on"], rows), ""]
    return [*lines, noise(result), ""]


def section_sampling(result: Result | None) -> list[str]:
    title = "Sampling at temperature > 0: numpy sampler vs llama.cpp's chain"
    if result is None:
        return not_run(title, "bench/sampling_cost.py")
    p = result["params"]
    per_token = [
        [
            f"`{name}`",
            ", ".join(f"{k} {v}" for k, v in case["options"].items()) or "the defaults",
            f"{num(case['chain_us']['median'])} ({num(case['chain_us']['p90'])})",
            f"{num(case['draw_us']['median'])} ({num(case['draw_us']['p90'])})",
            f"**{num(case['ratio'], 1)}×**",
            f"{case['deferred_share']:.1%}",
        ]
        for name, case in result.get("per_token", {}).items()
    ]
    decode = [
        [
            key.removeprefix("x"),
            f"{num(case['step_ms']['chain'])} / {num(case['step_ms']['draw'])}",
            f"{num(case['tok_s']['chain'])} / {num(case['tok_s']['draw'])}",
            f"**{sp(case['ratio'], 3)}**",
            sp(case["cpu_ratio"], 3),
        ]
        for key, case in result.get("decode", {}).items()
    ]
    return [
        f"## {title}",
        "",
        f"One llama.cpp engine in process (`--parallel {p['parallel']}`, {p['threads']} threads, batch-invariant "
        "defaults), temperature 0.8. Per token: for each parameter set one generation of "
        f"{p['steps']} tokens whose every step is sampled by both samplers (the same parameters and seed, the "
        "order alternating from step to step, each call timed: all the decoder thread spends on sampling); "
        "*left to llama.cpp*: steps where the numpy draw let llama.cpp's own cuts settle ties.",
        "",
        *table(
            [
                "parameter set",
                "options",
                "chain µs/token p50 (p90)",
                "numpy µs/token p50 (p90)",
                "chain ÷ numpy",
                "left to llama.cpp",
            ],
            per_token,
        ),
        "",
        f"Decode: N generations of up to {p['tokens']} tokens at the default sampling options started together, "
        "the engine's steps alternating between sampling every sequence with the chain and with the numpy draw "
        f"(adjacent steps share the machine's other load), {p['runs']} runs; per step the wall time, the tokens/s "
        "per sequence it gives, and the decoder thread's CPU time.",
        "",
        *table(
            [
                "sequences",
                "step ms chain / numpy",
                "tok/s per sequence chain / numpy",
                "numpy ÷ chain tok/s (per run)",
                "chain ÷ numpy decoder CPU (per run)",
            ],
            decode,
        ),
        "",
        noise({**result, "noise": {}}),
        "",
    ]


def section_overload(result: Result | None) -> list[str]:
    title = "Overload: generation throughput while refusing"
    if result is None:
        return not_run(title, "bench/overload.py")
    p, tok_s, queue = result["params"], result["tok_s"], result["queue"]
    rounds = result.get("rounds", [])
    hammered = [r["hammered"] for r in rounds]

    def over_rounds(phase: str, pick: Callable[[Mapping[str, Any]], Any], digits: int = 1) -> str:
        values = [v for r in rounds if (v := pick(r[phase])) is not None]
        return sp(benchlib.spread(values, digits), digits) if values else "–"

    rows = [
        ["tokens/s to all clients", sp(tok_s["alone"]), sp(tok_s["hammered"])],
        [
            "answered requests",
            over_rounds("alone", lambda x: x["answered"], 0),
            over_rounds("hammered", lambda x: x["answered"], 0),
        ],
        ["refused (503) per s", "–", sp(result.get("refusals_per_s"))],
        [
            "503s the server counted per s",
            "–",
            over_rounds("hammered", lambda x: x["server"]["busy"] / p["window"]),
        ],
        [
            "503 answered after, ms p50 / p99",
            "–",
            over_rounds("hammered", lambda x: x["refusals"]["latency_ms"]["p50"], 2)
            + " / "
            + over_rounds("hammered", lambda x: x["refusals"]["latency_ms"]["p99"], 2),
        ],
        [
            "server's mean queue time of admitted requests, ms",
            over_rounds("alone", lambda x: x["server"]["queue_ms_mean"]),
            over_rounds("hammered", lambda x: x["server"]["queue_ms_mean"]),
        ],
    ]
    engine_rows = [
        ("sequences per engine step (whole phase)", "sequences_per_step", 2),
        ("engine steps per s", "steps_per_s", 1),
        ("tokens per engine step (generated and prompt)", "tokens_per_step", 1),
        ("server process CPU, cores", "cpu_cores", 2),
    ]

    def server_figure(key: str) -> Callable[[Mapping[str, Any]], Any]:
        return lambda phase: phase["server"].get(key)

    for label, key, digits in engine_rows:
        if any(key in r["alone"]["server"] for r in rounds):
            pick = server_figure(key)
            rows.append([label, over_rounds("alone", pick, digits), over_rounds("hammered", pick, digits)])
    places = [
        [place, str(cell["n"]), sp(cell["wait_ms"], 0)]
        for place, cell in sorted(queue["by_place"].items(), key=lambda kv: int(kv[0]))
    ]
    excess = queue["excess_releases"]
    largest = "–" if excess["max"] is None else excess["max"]
    short = sum(h.get("short", 0) for h in hammered) + sum(r["alone"].get("short", 0) for r in rounds)
    lines = [
        f"## {title}",
        "",
        f"One `slm-runtime serve --parallel {p['parallel']} --max-queue {p['max_queue']}` ({p['threads']} threads), "
        f"two phases alternating over {p['rounds']} rounds: *alone*, {p['parallel']} clients each streaming "
        f"`POST /v1/completions` of {p['tokens']} greedy tokens one after the other (every slot busy, nobody "
        f"refused); *hammered*, the same clients and {p['hammer']} more, all impatient: a 503 is retried at once, "
        f"an answer is followed at once by the next request. Each phase warms up for {num(p['warm'], 0)} s, then "
        f"{num(p['window'], 0)} s are measured. Median [min–max] over rounds:",
        "",
        *table(["", "alone", "hammered"], rows),
        "",
        f"Hammered ÷ alone tokens/s, per round: **{sp(result['ratio'], 3)}**.",
        "",
        f"Waits of the {queue['requests']} requests admitted in the hammered windows by their place in the queue "
        "(requests sent before it that had no first token yet when it was sent); wait: sent to first token, ms:",
        "",
        *table(["place", "requests", "wait ms"], places),
        "",
        f"Time to first token without a queue (alone phases): {sp(queue.get('unqueued_ttft_ms'))} ms; the admitted "
        "requests' wait beyond what their place explains (their place's stream ends plus that), ms p50 / p99 / max: "
        + " / ".join(num(queue.get("wait_beyond_place_ms", {}).get(k)) for k in ("p50", "p99", "max"))
        + ".",
        "",
        "In a first-come-first-served queue a request gets a slot at the (place + 1)-th stream end at the latest: "
        f"{excess['positive']} of {queue['requests']} requests saw more stream ends before their first token than "
        f"that ({excess['over_one']} more than one more; largest excess {largest}; one can show up "
        "when a stream ends while the request's own prompt is read).",
        "",
    ]
    if short:
        lines += [f"**Requests that ended before {p['tokens']} tokens (EOS):** {short}.", ""]
    return [*lines, noise(result), ""]


def _case_noise(case: Mapping[str, Any]) -> str:
    foreign = case.get("noise", {}).get("foreign_cpu") or {}
    if not foreign.get("n"):
        return "no noise record."
    return (
        f"other work's CPU share median {foreign['median']:.0%}, max {foreign['max']:.0%}, "
        f"{case['noise'].get('redone', 0)} runs redone."
    )


def _gateway_row(clients: str, cell: Mapping[str, Any]) -> list[str]:
    direct, gateway = cell["paths"]["direct"], cell["paths"]["gateway"]
    cpu = cell.get("gateway_cpu_ms_per_request")
    return [
        clients,
        f"{num(direct['ttft_ms']['p50'])} / {num(gateway['ttft_ms']['p50'])}",
        f"**{sp(cell['ttft_p50_diff_ms'], 2)}**",
        f"{sp(direct['tok_s'])} / {sp(gateway['tok_s'])}",
        f"**{sp(cell['tok_s_ratio'], 3)}**",
        f"{num(direct['itl_ms']['p50'])} / {num(gateway['itl_ms']['p50'])}",
        sp(cpu) if cpu else "–",
        "yes" if cell.get("meets_target") else "**no**",
    ]


def section_gateway(result: Result | None) -> list[str]:
    title = "Gateway overhead: the runtime through slm-gateway vs reached directly"
    if result is None:
        return not_run(title, "bench/gateway.py")
    p, target = result["params"], result.get("target", {})
    points = sorted(result["points"].items(), key=lambda kv: int(kv[0]))
    head = [
        "clients",
        "TTFT p50 ms direct / gateway",
        "gateway − direct TTFT p50 ms (per run)",
        "aggregate tok/s direct / gateway",
        "gateway ÷ direct tok/s (per run)",
        "ITL p50 ms direct / gateway",
        "gateway CPU ms / request",
        "target met",
    ]
    pooled = ", ".join(f"{n} client(s) {num(cell.get('ttft_p50_diff_ms_pooled'), 2)} ms" for n, cell in points)
    pairs = "; ".join(
        f"{n} client(s): TTFT p50 difference {sp(cell['by_pair']['ttft_p50_diff_ms'], 2)} ms, tok/s ratio "
        f"{sp(cell['by_pair']['tok_s_ratio'], 3)} ({cell['by_pair']['tok_s_ratio']['n']} pairs)"
        for n, cell in points
        if "by_pair" in cell
    )
    per_token = ", ".join(f"{n} client(s) {num(cell.get('gateway_cpu_us_per_token'), 0)} µs" for n, cell in points)
    gateway_rss = (result.get("memory_mib", {}).get("slm-gateway") or {}).get("after_sweep", {}).get("rss")
    lines = [
        f"## {title}",
        "",
        f"One `slm-runtime serve` (`--parallel {p['parallel']}`, {p['threads']} threads, {p['context_length']} tokens "
        "per slot) reached on loopback directly and through slm-gateway in its own process (`bench/gateway.py`: "
        "`slm_gateway.app.create_app` served by uvicorn as `slm-gateway` serves it, with a static catalog of one "
        "Ready model and one endpoint instead of the Kubernetes watch). N clients start together, each streaming one "
        f"`POST /v1/completions` of {p['tokens']} tokens (greedy, a distinct prompt each); {p['runs']} runs, each "
        f"with direct and gateway waves interleaved ABBA (at least {p['pairs']} pairs and {p['requests']} requests "
        "per path, client count and run). Issue 16's target: TTFT p50 difference ≤ "
        f"{num(target.get('ttft_p50_diff_ms_max'), 0)} ms and tokens/s ≥ {num(target.get('tok_s_ratio_min'), 2)}× "
        "the direct path, on the medians over runs.",
        "",
        *table(head, [_gateway_row(n, cell) for n, cell in points]),
        "",
        *(
            [
                f"Per pair of adjacent waves (direct and gateway seconds apart, so the least drift of the machine "
                f"between them), median [min–max] over all pairs: {pairs}.",
                "",
            ]
            if pairs
            else []
        ),
        f"TTFT p50 difference over all runs' requests pooled: {pooled}. Gateway CPU per streamed token (user + "
        f"system, /proc): {per_token}; gateway RSS after the runs {num(gateway_rss)} MiB. The gateway shares the "
        "two cores with the runtime and the load generator here (in a cluster it runs in its own pod), so its CPU "
        "time comes out of the runtime's: these figures are an upper bound of the overhead a client sees.",
        "",
    ]
    short = {
        f"{path} at {n}": cell["paths"][path]["short_requests"]
        for n, cell in points
        for path in ("direct", "gateway")
        if cell["paths"][path].get("short_requests")
    }
    if short:
        listed = ", ".join(f"{where}: {count}" for where, count in short.items())
        lines += [f"**Requests that ended before {p['tokens']} tokens (EOS):** {listed}.", ""]
    return [*lines, noise(result), ""]


def _cell(value: Any, digits: int) -> str:
    """A spread, a mapping of counts, or a number."""
    if isinstance(value, Mapping) and "median" in value:
        return sp(value, digits)
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {_cell(v, digits)}" for k, v in value.items()) or "–"
    return num(value, digits)


def _median(cell: Any) -> Any:
    return cell.get("median") if isinstance(cell, Mapping) else cell


def _operator_row(r: Mapping[str, Any]) -> list[str]:
    bare = r.get("bare") or {}
    restart = r.get("restart") or {}
    restart_cell = (
        f"{num(restart.get('seconds_leading_to_reconciled'), 1)} s, {num(restart.get('writes'), 0)} writes "
        f"(list {num(restart.get('full_list_seconds'), 2)} s), RSS {num(restart.get('rss_mib'), 0)} MiB"
        if restart
        else "–"
    )
    return [
        str(r.get("count", "?")),
        sp(r.get("seconds_to_ready"), 1),
        num(_median(bare.get("seconds_to_available")), 1),
        num(r.get("ready_over_available"), 2),
        num(_median(r.get("operator_objects_per_second")), 0),
        num(_median(bare.get("objects_per_second")), 0),
        num(r.get("apply_throughput_ratio"), 2),
        num(r.get("writes_per_slm"), 2),
        num(_median(r.get("api_requests_per_slm")), 1),
        num(_median(r.get("steady_state_writes")), 0),
        num(_median(r.get("idle_cpu_percent")), 1),
        f"{num(_median(r.get('operator_rss_mib')), 0)} ({num(_median(r.get('operator_peak_rss_mib')), 0)})",
        restart_cell,
    ]


OPERATOR_HEAD = [
    "N",
    "operator s to all Ready",
    "bare s to all Available",
    "Ready ÷ Available",
    "operator applies/s",
    "bare applies/s",
    "throughput ratio",
    "writes / SLM",
    "requests / SLM",
    "steady-state writes",
    "idle CPU %",
    "RSS (peak) MiB",
    "restart: to all reconciled, writes, RSS",
]


def _per_slm_table(r: Mapping[str, Any]) -> list[str]:
    """Requests per SLMDeployment by verb and resource (discovery GETs folded into one row)."""
    rows: dict[str, float] = {}
    for key, value in (r.get("requests_per_slm_by_resource") or {}).items():
        verb, _, resource = key.partition(" ")
        label = f"{verb} discovery (/api, /apis)" if resource.startswith("/") else key
        rows[label] = rows.get(label, 0.0) + float(value)
    return table(["request", "per SLMDeployment"], ([k, num(v, 2)] for k, v in sorted(rows.items())))


STAGES = ("listing", "slot", "render", "apply")


def _stages_table(results: list[Mapping[str, Any]]) -> list[str]:
    """Mean seconds per stage from an SLMDeployment's event to its applies (the median run's sample), with the
    apiserver's mean time to answer one apply; empty for results without stages."""
    rows = []
    for r in sorted(results, key=lambda r: r.get("count", 0)):
        samples = [s for s in r.get("samples") or [] if s.get("stages")]
        if samples:
            stages = samples[len(samples) // 2]
            cells = [num((stages["stages"].get(stage) or {}).get("mean"), 3) for stage in STAGES]
            rows.append([str(r.get("count", "?")), *cells, num(stages.get("apiserver_apply_seconds"), 3)])
    head = ["N", "listing s", "waiting for a slot s", "render s", "apply s", "apiserver s per apply"]
    return [*table(head, rows), ""] if rows else []


def section_operator(result: Result | None, images: Path) -> list[str]:
    title = "Operator scale"
    if result is None:
        return not_run(title, "bench/operator_scale.py")
    lines = [
        f"## {title}",
        "",
        "N SLMDeployments applied at once to the test control plane (kwok nodes), and in the same run, on the same "
        "control plane, the bare-client baseline: the objects `render_all` makes for the same N, server-side "
        "applied by a plain async client at its fastest concurrency. *Ready ÷ Available*: the operator's time until "
        "every SLMDeployment is Ready over the bare client's until every Deployment is Available (both wait for "
        "the same controllers and scheduler: that figure is the platform's, the excess over 1 is the operator's). "
        "*Throughput ratio*: the operator's owned-object applies per second over the bare client's. Writes and "
        "requests per SLMDeployment from the apiserver's audit log of the operator's account (Lease renewals "
        f"apart); steady state: {num(result.get('steady_seconds'), 0)} s after all Ready; idle CPU in that window "
        "(% of one core); RSS: the operator's resident memory at the end of that window, peak: its high-water mark "
        "(VmHWM); restart: a new operator process over the N Ready SLMDeployments, seconds from holding the "
        "Lease until it has reconciled each, with one full list of the namespace by the benchmark's client beside "
        "it. See docs/operator-scale.md for what the figures mean and where the operator's time goes.",
        "",
    ]
    largest: Mapping[str, Any] | None = None
    largest_setting = ""
    for setting in _settings(result):
        limits = setting.get("client_limits") or {}
        rows = [_operator_row(r) for r in sorted(setting.get("results", []), key=lambda r: r.get("count", 0))]
        detail = (
            f"kube-controller-manager --kube-api-qps {num(limits.get('controller_manager_qps'), 0)} "
            f"--kube-api-burst {num(limits.get('controller_manager_burst'), 0)}, kube-scheduler --kube-api-qps "
            f"{num(limits.get('scheduler_qps'), 0)} --kube-api-burst {num(limits.get('scheduler_burst'), 0)}"
            if limits
            else "not recorded"
        )
        lines += [
            f"### {str(setting.get('name', '?')).capitalize()} client rate limits ({detail})",
            "",
            f"Bare client: {setting.get('bare_concurrency', '?')} requests in flight (objects/s by concurrency: "
            + ", ".join(f"{k}: {v}" for k, v in (setting.get("bare_sweep_objects_per_second") or {}).items())
            + ").",
            "",
            *table(OPERATOR_HEAD, rows),
            "",
        ]
        results = setting.get("results") or []
        stages = _stages_table(results)
        if stages:
            lines += [
                "From an SLMDeployment's event to its applies, mean per stage (the operator's "
                "slm_operator_stage_seconds; apply: the writes of one reconcile, answered):",
                "",
                *stages,
            ]
        if results and largest is None:
            largest = max(results, key=lambda r: r.get("count", 0))
            largest_setting = str(setting.get("name", "?"))
    if largest is not None:
        lines += [
            f"Requests per SLMDeployment at N = {largest.get('count')} ({largest_setting} limits), by verb and "
            "resource:",
            "",
            *_per_slm_table(largest),
            "",
            f"![operator vs bare client](benchmarks/{plot_operator(result, images / 'operator_scale.png')})",
            "",
        ]
    if result.get("incomplete"):
        lines += [f"**Incomplete:** {result['incomplete']}.", ""]
    if result.get("versions"):
        lines += ["Versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", ""]
    if "load_before" in result:
        return [*lines, noise(result), ""]
    return [*lines, f"Wall time {num(result.get('wall_seconds'), 0)} s.", ""]


def replace_section(document: str, section: list[str], before: Iterable[str] = ()) -> str:
    """``document`` with the section under ``section``'s heading (its first line; up to the next level-2 heading)
    replaced by ``section``. A document without that heading gets ``section`` before whichever heading of
    ``before`` comes first in it, else at its end."""
    lines = document.rstrip("\n").split("\n")
    if section[0] in lines:
        start = lines.index(section[0])
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = section
    else:
        at = min((lines.index(heading) for heading in before if heading in lines), default=None)
        if at is None:
            lines += ["", *section]
        else:
            lines[at:at] = section
    return "\n".join(lines).rstrip() + "\n"


def section_real_node(result: Result | None) -> list[str]:
    title = "The runtime in a pod on the real node"
    if result is None or "pod_vs_host" not in result:
        return not_run(title, "make bench-real-node")
    p, pair = result["params"], result["pod_vs_host"]
    d, t = pair["decode_tok_s"], pair["ttft_ms"]
    lines = [
        f"## {title}",
        "",
        "`bench/real_node.py`: the test control plane's real node (containerd, runc, the pinned kubelet, kube-proxy), "
        "the images built by `hack/images/build.sh`, the operator on the host, examples/gemma3-270m.yaml placed on "
        f"the node. The same `slm-runtime serve` settings in a pod (reached on its pod IP) and on the host (loopback), "
        "both with the image's llama.cpp build (the portable wheel, no `-march=native`): "
        f"{p['tokens']} new tokens, greedy, {p['threads']} threads, context {p['context_length']}, {p['runs']} "
        "runs in rotating order after a warm-up.",
        "",
        *table(
            ["", "host", "pod", "per-run comparison"],
            [
                ["decode tokens/s", sp(d["host"]), sp(d["pod"]), f"ratio pod/host **{sp(pair['ratio'], 3)}**"],
                ["TTFT ms", sp(t["host"]), sp(t["pod"]), f"pod - host **{sp(pair['ttft_overhead_ms'])} ms**"],
            ],
        ),
        "",
    ]
    build = pair.get("portable_vs_native_build")
    if build:
        lines += [
            "The host's own llama.cpp build for this CPU (the virtual environment's wheel) in the same runs: "
            f"{sp(build['decode_tok_s']['host_native'])} tokens/s, TTFT {sp(build['ttft_ms']['host_native'])} ms; "
            f"the image's portable build reaches {sp(build['ratio'], 3)} of its decode speed, with "
            f"{sp(build['ttft_overhead_ms'])} ms more TTFT (the portable build, not the pod, is what a user of the "
            "image gives up on a CPU with AVX-512).",
            "",
        ]
    startup = result.get("apply_to_answer") or {}
    if startup:
        phases = list((startup.get("not_cached") or {}).get("phases_s", {}))
        rows = [[phase, *(sp(startup[k]["phases_s"][phase], 2) for k in ("not_cached", "cached"))] for phase in phases]
        rows.append(["**total**", *(f"**{sp(startup[k]['total_s'], 1)}**" for k in ("not_cached", "cached"))])
        lines += [
            f"From `kubectl apply` to the first answered request through the Service, image present, "
            f"{p['rounds']} rounds; seconds per step (a pod watch, the runtime's log, the client):",
            "",
            *table(["step", "model not cached", "model cached"], rows),
            "",
            "Steps: reconcile (apply -> pod created), scheduling (-> bound), sandbox + image + pull start (pod "
            "sandbox and CNI, no image pull: the image is on the node, the init container's Python start), model "
            "pull (the init container's first to last log line; a cached model is found at once), runtime start "
            "(-> `loading model`), load + warm-up (the runtime's own measure), readiness (-> pod Ready; the probe's "
            "period is 5 s), endpoint + first answer (through the Service).",
            "",
        ]
    return [*lines, noise(result), ""]


STZ_STEPS = {  # bench/scale_to_zero.py's steps, with what ends each
    "scale-up": "request sent -> Deployment at 1 replica",
    "scheduling": "-> pod bound to the node",
    "pod start": "-> `model-pull` started (sandbox, CNI)",
    "model pull": "`model-pull` started -> finished",
    "runtime start": "-> runtime container started",
    "load": "-> model loaded and warmed up (runtime's log)",
    "readiness": "-> pod Ready (probe every 5 s)",
    "first token": "-> first token at the client",
}


def section_scale_to_zero(result: Result | None) -> list[str]:
    title = "Scale to zero through slm-gateway"
    if result is None or "cold_start" not in result:
        return not_run(title, "make bench-scale-to-zero")
    p, cold, affinity = result["params"], result["cold_start"], result.get("prefix_affinity") or {}
    by_cache, modes = cold["by_cache"], cold["wake_modes"]
    caches = ("cached", "not_cached")
    rows = [
        [f"{step} ({what})", *(sp(by_cache[c]["phases_s"].get(step), 2) for c in caches)]
        for step, what in STZ_STEPS.items()
    ]
    rows.append(["**request at zero -> first token**", *(f"**{sp(by_cache[c]['total_s'], 2)}**" for c in caches)])
    rows.append(["model pull by its own log (ns)", *(sp(by_cache[c].get("pull_log_s"), 2) for c in caches)])
    lines = [
        f"## {title}",
        "",
        "`bench/scale_to_zero.py` on the real node with the chart's gateway and the metrics pipeline (Prometheus "
        "scraping every 1 s, KEDA, metrics-server): Gemma 3 270M models with `minReplicas: 0`, `scaleToZeroAfter: "
        f"{p.get('idle')}`, KEDA `pollingInterval: 1s`, {p.get('threads')} llama.cpp threads. Each round waits until "
        "the model is at zero (no pod left), then streams one `/api/generate` through the gateway's Service. "
        "Cached: the model cache is a shared claim that already holds the model; not cached: an emptyDir, so "
        "the init container builds the model again from the package in the runtime image (copied and hashed; no "
        f"network). Gateway wake mode `direct`, {by_cache['cached']['n']} rounds each; seconds per step:",
        "",
        *table(["step", "model cached", "model not cached"], rows),
        "",
        "Marks: the client's clock for the request and the first token, watches of the Deployment and the pods "
        "(ms), the pod status' container startedAt/finishedAt (**one-second resolution**, truncated: the steps "
        "next to those marks are each off by up to 1 s) and the runtime log's CRI timestamp for the loaded model. "
        "From the runtime's start to Ready is load + readiness.",
        "",
    ]
    mode_rows = [
        [
            f"`{mode}`",
            *(sp((modes[mode].get(c) or {}).get("total_s"), 2) for c in caches),
            *(sp((modes[mode].get(c) or {}).get("scale_up_s"), 2) for c in caches),
            str(sum((modes[mode].get(c) or {}).get("n", 0) for c in caches)),
        ]
        for mode in ("direct", "metric")
        if mode in modes
    ]
    head = ["wake mode", "to first token, cached", "not cached", "scale-up, cached", "not cached", "rounds (both)"]
    differences = ", ".join(
        f"{cache.replace('_', ' ')} {value:+.2f} s"
        for cache, value in (modes.get("metric_minus_direct_median_s") or {}).items()
    )
    lines += [
        f"Wake modes, same models, blocks in the order {' → '.join(p.get('wake_blocks', []))} (the gateway "
        "switched between blocks with `helm upgrade --reuse-values --set gateway.wake.mode=...`); seconds:",
        "",
        *table(head, mode_rows),
        "",
        f"Default: **`{modes.get('recommended', 'direct')}`** (`direct` stays unless `metric` measures faster; "
        f"metric − direct, medians: {differences or '–'}). `metric` waits for "
        "Prometheus' next scrape of the gateway and KEDA's next poll (1 s each here; KEDA's default pollingInterval "
        "is 15 s), `direct` scales the Deployment as the request arrives.",
        "",
    ]
    if affinity:
        off, on = affinity["modes"]["off"], affinity["modes"]["on"]
        aff_rows = [
            [
                label,
                f"**{sp(cell['ttft_ms'], 0)}**",
                f"{cell['same_pod']} / {cell['n']}",
                sp(cell["prompt_eval_ms"], 0),
                sp(cell["earlier_ttft_ms"], 0),
            ]
            for label, cell in (("off (least in flight)", off), ("on", on))
        ]
        lines += [
            f"Prefix affinity: {affinity['replicas']} replicas, the runtime's prompt cache "
            f"{affinity['prompt_cache']}, one slot each. Per trial a new prefix of ~{affinity['prefix_tokens']} "
            f"tokens (prompts {num(affinity['prompt_tokens'], 0)} tokens by the runtime's `prompt_eval_count`): one "
            "request with it, then the measured one with the same prefix and another suffix, streamed through the "
            "gateway; ms:",
            "",
            *table(
                [
                    "gateway prefix affinity",
                    "TTFT of the follow-up",
                    "on the earlier request's pod",
                    "runtime prompt eval",
                    "TTFT of the earlier request",
                ],
                aff_rows,
            ),
            "",
            f"TTFT off ÷ on: **{num(affinity.get('ratio_off_on'), 2)}×**. With affinity off the gateway's "
            "least-in-flight choice takes turns between idle pods, so a follow-up sent right after its earlier "
            "request lands on the other pod (the worst case; random choice would hit half the time).",
            "",
        ]
    return [*lines, noise(result), ""]


def section_pull(text: str | None) -> list[str]:
    """From pull_throughput.log, the script's own output (``make bench-runtime`` tees it there)."""
    if text is None:
        return not_run("Model pull throughput", "bench/pull_throughput.py")
    log_lines = [line for line in text.splitlines() if line.strip()]
    intro = "`bench/pull_throughput.py --size-mib 256 --rounds 2` (its own log; best of its rounds):"
    return ["## Model pull throughput", "", intro, "", "```", *log_lines, "```", ""]


def section_setup(*results: Result | None) -> list[str]:
    """The machine and versions of the first result, and the load around each result's run."""
    title = "Machine and versions"
    present = [r for r in results if r is not None and "machine" in r]
    if not present:
        return [f"## {title}", "", "No benchmark results found: run `make bench`.", ""]
    first = present[0]
    m = first["machine"]
    versions = dict(first.get("versions", {}))
    lines = [
        f"## {title}",
        "",
        f"- Machine: {m['cpu']}, {m['cores']} cores available, {m['memory_gib']} GiB memory, Linux {m['kernel']}.",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".",
        f"- Date: {first.get('date', '?')}.",
        "- Noise: load average (1/5/15 min) before → after each part:",
    ]
    lines += [
        f"  - {r['name']}: {' / '.join(map(str, r.get('load_before', [])))} → "
        f"{' / '.join(map(str, r.get('load_after', [])))}, {num(r.get('wall_seconds'), 0)} s"
        for r in present
    ]
    return [*lines, ""]


@dataclass
class Inputs:
    """What sections render from: the results in ``state`` (each file read once; ``state`` None: nothing ran) and
    the folder the plots go to."""

    state: Path | None
    images: Path
    _read: dict[str, Any] = field(default_factory=dict)

    def result(self, name: str) -> Result | None:
        """``name``.json, None when it is missing."""
        if name not in self._read:
            self._read[name] = None if self.state is None else load(self.state, name)
        found: Result | None = self._read[name]
        return found

    def text(self, name: str) -> str | None:
        """A text file's content (a script's own log), None when it is missing."""
        path = None if self.state is None else self.state / name
        return path.read_text() if path is not None and path.is_file() else None


@dataclass(frozen=True)
class Section:
    """One level-2 section of docs/benchmarks.md: ``render`` gets the results named in ``results`` (None for each
    one missing) and the inputs (plots' folder, other files). Its first line is its heading, also when not run."""

    results: tuple[str, ...]
    render: Callable[[list[Result | None], Inputs], list[str]]

    def lines(self, inputs: Inputs) -> list[str]:
        return self.render([inputs.result(name) for name in self.results], inputs)

    @property
    def heading(self) -> str:
        return self.lines(Inputs(None, Path()))[0]


PARTS: dict[str, Section] = {  # in the document's order, after the machine and versions
    "single": Section(("single_stream",), lambda r, _: section_single(*r)),
    "concurrency": Section(("concurrency",), lambda r, i: section_concurrency(*r, i.images)),
    "memory": Section(("single_stream", "concurrency"), lambda r, _: section_memory(*r)),
    "slot_gaps": Section(("slot_gaps",), lambda r, _: section_slot_gaps(*r)),
    "prompt_reuse": Section(("prompt_reuse",), lambda r, _: section_prompt_reuse(*r)),
    "sampling": Section(("sampling_cost",), lambda r, _: section_sampling(*r)),
    "constrained": Section(("constrained_decoding",), lambda r, _: section_constrained(*r)),
    "overload": Section(("overload",), lambda r, _: section_overload(*r)),
    "onnx": Section(("onnx_engine",), lambda r, _: section_onnx(*r)),
    "gateway": Section(("gateway",), lambda r, _: section_gateway(*r)),
    "operator": Section(("operator_scale",), lambda r, i: section_operator(*r, i.images)),
    "real_node": Section(("real_node",), lambda r, _: section_real_node(*r)),
    "scale_to_zero": Section(("scale_to_zero",), lambda r, _: section_scale_to_zero(*r)),
    "pull": Section((), lambda _, i: section_pull(i.text("pull_throughput.log"))),
}
SECTIONS: dict[str, Section] = {
    "setup": Section(
        tuple(dict.fromkeys(name for part in PARTS.values() for name in part.results)),
        lambda r, _: section_setup(*r),
    ),
    **PARTS,
}
"""Every section by the name ``--only`` takes, in the document's order."""

INTRO = [
    "# Benchmarks",
    "",
    "Generated by `make bench` (`bench/report.py` from `.state/bench/*.json`); do not edit by hand. All runtime "
    "figures: Gemma 3 270M Q4_K_M, the same prompt, greedy decoding unless a section says otherwise; each is the "
    "median over repeated runs with [min–max]; comparisons are ratios taken within the same run. Absolute numbers "
    "are of this one machine, shared with other work while it ran: read the ratios and the spreads, not the "
    "absolute values.",
    "",
]


def images_for(out: Path) -> Path:
    """The plots' folder beside the Markdown file (docs/benchmarks.md -> docs/benchmarks/)."""
    return out.parent / out.stem


def render(state: Path, out: Path) -> str:
    inputs = Inputs(state, images_for(out))
    lines = list(INTRO)
    for section in SECTIONS.values():
        lines += section.lines(inputs)
    return "\n".join(lines).rstrip() + "\n"


def rewrite(document: str, name: str, state: Path, out: Path) -> str:
    """``document`` with section ``name`` rendered again from its own results; a section the document lacks goes
    before the earliest in the document of the sections after it in :data:`SECTIONS`' order, else at the end."""
    names = list(SECTIONS)
    later = [SECTIONS[other].heading for other in names[names.index(name) + 1 :]]
    return replace_section(document, SECTIONS[name].lines(Inputs(state, images_for(out))), later)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--state", type=Path, default=benchlib.STATE)
    parser.add_argument("--out", type=Path, default=benchlib.ROOT / "docs" / "benchmarks.md")
    parser.add_argument(
        "--only",
        choices=list(SECTIONS),
        help="rewrite only this section of the existing --out from its own results (the others stay as they are; "
        "without an --out, the whole document)",
    )
    args = parser.parse_args()
    benchlib.setup_logging()
    if args.only and args.out.is_file():
        args.out.write_text(rewrite(args.out.read_text(), args.only, args.state, args.out))
    else:
        args.out.write_text(render(args.state, args.out))
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
