"""Start, find and stop the control-plane processes. Each runs in its own session with its log in a file and a
pid file next to it, so a later `cluster down` (another Python process) can stop exactly what `up` started."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Process", "free_ports", "pid_alive", "tail"]


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports that were free on 127.0.0.1 a moment ago (the kernel picks them)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a text file ('' when it does not exist)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 256 * 1024))
            data = handle.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


@dataclass(frozen=True)
class Process:
    """One named component, with its pid file and log in the state directory."""

    name: str
    state_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "run" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    def start(
        self,
        argv: list[str],
        cwd: Path | None = None,
        *,
        die_with_parent: bool = False,
        env: dict[str, str] | None = None,
    ) -> int:
        """Start argv in its own session (stdin closed, output appended to the log); returns the pid.

        With `die_with_parent` the kernel sends it SIGTERM when this Python process dies, so a test session
        that is killed leaves nothing behind; without it the process outlives us (`make cluster-up`).
        `env` adds to (or overrides) this process's environment; KUBECONFIG is never passed on."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        environment = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
        environment.update(env or {})
        with self.log_file.open("ab") as log:
            log.write(f"\n==> {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd or self.state_dir,
                env=environment,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent and sys.platform == "linux" else None,
            )
        self.pid_file.write_text(f"{child.pid}\n{argv[0]}\n", encoding="utf-8")
        # Keep the Popen object: pid() asks it (and so reaps the child) instead of /proc.
        _children[child.pid] = child
        return child.pid

    def pid(self) -> int | None:
        """The recorded pid when that process is still alive and still runs our binary."""
        try:
            pid_text, exe = self.pid_file.read_text(encoding="utf-8").splitlines()[:2]
            pid = int(pid_text)
        except (FileNotFoundError, ValueError):
            return None
        child = _children.get(pid)
        if child is not None:  # started by this interpreter: the Popen object knows best
            return pid if child.poll() is None else None
        for _ in range(20):  # a pid file from another process: check the pid still runs our binary
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
                state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
            except (FileNotFoundError, ProcessLookupError, IndexError):
                return None
            if state == "Z":
                return None
            if cmdline:  # empty only for a moment while the kernel sets up a fresh exec
                return pid if cmdline == exe else None
            time.sleep(0.05)
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the component's process group, SIGKILL it after `timeout`, and forget the pid."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.pid() is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            if self.pid() is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                while self.pid() is not None and time.monotonic() < deadline + 5:
                    time.sleep(0.1)
        child = _children.pop(pid, None) if pid is not None else None
        if child is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=1)
        self.pid_file.unlink(missing_ok=True)


_children: dict[int, subprocess.Popen[bytes]] = {}

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: ask Linux for SIGTERM when the parent exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def pid_alive(pid: int) -> bool:
    """Whether some process with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
