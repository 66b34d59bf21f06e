#!/usr/bin/env python3
"""Pull throughput of ``slm_runtime.fetch.pull`` against ``curl`` for the same file (a benchmark, not a test).

A file of --size-mib random bytes is served over HTTP on 127.0.0.1 by a separate process using sendfile(2),
so the server costs little and shares no interpreter with the client. Each round downloads it with
``curl -o FILE``, with ``curl -o FILE && sha256sum FILE`` (what a shell init container needs to verify),
and with ``pull()`` (sha256 while streaming, fsync, atomic rename); the best of --rounds is kept for each,
wall time and CPU time. The ratios are pull throughput / baseline throughput; the issue aims for >= 0.9
against curl. On a busy machine wall times are noisy: compare the CPU seconds too.

    .venv/bin/python bench/pull_throughput.py --size-mib 512 --rounds 3
    .venv/bin/python bench/pull_throughput.py --size-mib 256 --link-mib-s 100   # a 100 MiB/s link
"""

from __future__ import annotations

import argparse
import http.server
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("bench.pull_throughput")


class _SendfileHandler(http.server.SimpleHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    rate = 0.0  # bytes per second; 0 sends as fast as the machine can

    def copyfile(self, source, outputfile) -> None:  # type: ignore[no-untyped-def]
        self.wfile.flush()
        if not self.rate:
            self.connection.sendfile(source)
            return
        start, sent, step = time.perf_counter(), 0, 1 << 20
        while count := self.connection.sendfile(source, sent, step):
            sent += count
            ahead = sent / self.rate - (time.perf_counter() - start)
            if ahead > 0:
                time.sleep(ahead)

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(root: Path, port_file: Path, rate: float) -> None:
    """Serve ``root`` (at ``rate`` bytes/s when not 0) until killed; write the chosen port to ``port_file``."""
    os.chdir(root)
    _SendfileHandler.rate = rate
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SendfileHandler)
    port_file.write_text(str(httpd.server_address[1]))
    httpd.serve_forever()


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _time(run: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its children) spent in ``run``."""
    start, cpu = time.perf_counter(), _cpu()
    run()
    return time.perf_counter() - start, _cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--link-mib-s", type=float, default=0.0, help="pace the server to this many MiB/s (a network link)"
    )
    parser.add_argument("--serve", nargs=3, metavar=("ROOT", "PORT_FILE", "RATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]), float(args.serve[2]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "slm_runtime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if shutil.which("curl") is None:
        log.error("curl is not installed")
        return 1

    from slm_runtime.fetch import FetchSettings, NullProgress, pull

    with tempfile.TemporaryDirectory(prefix="slm-bench-") as tmp:
        work = Path(tmp)
        root = work / "srv"
        root.mkdir()
        model = root / "model.gguf"
        size = args.size_mib * 1024 * 1024
        with model.open("wb") as out:
            for _ in range(args.size_mib):
                out.write(os.urandom(1024 * 1024))
        port_file = work / "port"
        rate = str(args.link_mib_s * 1024 * 1024)
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(port_file), rate])
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            url = f"http://127.0.0.1:{port_file.read_text()}/model.gguf"
            settings = FetchSettings(max_attempts=1)
            curl_out = work / "curl.gguf"

            def curl() -> None:
                subprocess.run(["curl", "-sSf", "-o", str(curl_out), url], check=True)

            def curl_sha256sum() -> None:
                curl()
                subprocess.run(["sha256sum", str(curl_out)], check=True, stdout=subprocess.DEVNULL)

            def slm_pull() -> None:
                pull(url, work / "cache", settings=settings, progress=lambda _: NullProgress())

            best: dict[str, tuple[float, float]] = {}
            for round_no in range(1, args.rounds + 1):
                for name, run in (("curl", curl), ("curl+sha256sum", curl_sha256sum), ("pull", slm_pull)):
                    wall, cpu = _time(run)
                    old = best.get(name, (float("inf"), float("inf")))
                    best[name] = (min(old[0], wall), min(old[1], cpu))
                    curl_out.unlink(missing_ok=True)
                    shutil.rmtree(work / "cache", ignore_errors=True)
                log.info("round %d: %s", round_no, ", ".join(f"{k} {w:.3f}s" for k, (w, _) in best.items()))
        finally:
            server.terminate()
            server.wait()
    mib = size / 1024 / 1024
    for name, (wall, cpu) in best.items():
        log.info("%-15s %7.0f MiB/s  wall %.3fs  cpu %.3fs", name, mib / wall, wall, cpu)
    pull_wall = best["pull"][0]
    log.info(
        "%d MiB: pull/curl throughput ratio %.2f, pull/(curl+sha256sum) %.2f",
        args.size_mib,
        best["curl"][0] / pull_wall,
        best["curl+sha256sum"][0] / pull_wall,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
