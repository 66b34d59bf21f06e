"""`slm run` in a real terminal (tmux): an interactive exchange, a multi-line message, /set, Ctrl-C, /bye."""

from __future__ import annotations

import itertools
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from local_e2e import MODEL, SlmServe, slm_command

pytestmark = pytest.mark.model


_SESSIONS = itertools.count()


class Terminal:
    """One tmux session on a private server socket, running a command and then reporting its exit code."""

    def __init__(self, command: list[str]) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is not installed; run hack/install-test-tools.sh (make test does)")
        self.tmux = tmux
        self.socket = f"slm-run-test-{os.getpid()}-{next(_SESSIONS)}"  # a fresh tmux server per terminal
        script = f"{shlex.join(command)}; echo EXIT=$?; sleep 600"
        self._tmux("new-session", "-d", "-s", "chat", "-x", "160", "-y", "60", script)

    def _tmux(self, *args: str) -> str:
        result = subprocess.run(
            [self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=30, check=True
        )
        return result.stdout

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-t", "chat", "-l", text)
        self._tmux("send-keys", "-t", "chat", "Enter")

    def interrupt(self) -> None:
        self._tmux("send-keys", "-t", "chat", "C-c")

    def screen(self) -> list[str]:
        lines = [line.rstrip() for line in self._tmux("capture-pane", "-p", "-t", "chat", "-S", "-200").splitlines()]
        while lines and not lines[-1]:
            lines.pop()  # the empty rows below the cursor
        return lines

    def wait_for(self, check: Callable[[list[str]], bool], what: str, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while time.monotonic() < deadline:
            lines = self.screen()
            if check(lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}; the screen:\n" + "\n".join(lines))

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=30, check=False)


@pytest.fixture
def terminal(served: SlmServe) -> Iterator[Terminal]:
    term = Terminal(slm_command("run", MODEL, "--url", served.url))
    yield term
    term.close()


def prompts(lines: list[str]) -> int:
    """Prompts on screen: the answered ones (>>> text) and the one waiting (>>>)."""
    return sum(1 for line in lines if line.startswith(">>>"))


def test_interactive_exchange(terminal: Terminal) -> None:
    terminal.wait_for(lambda lines: prompts(lines) == 1, "the first >>> prompt", timeout=60)
    # Gemma 3 270M is a base model: a sampled reply can loop until the context is full, minutes on 2 cores.
    terminal.type("/set parameter num_predict 48")
    terminal.wait_for(lambda lines: "Set parameter 'num_predict' to '48'" in lines, "the /set answer")

    terminal.type("Reply with one word: hello")
    lines = terminal.wait_for(lambda lines: prompts(lines) == 3, "the reply and the next prompt")
    asked = lines.index(">>> Reply with one word: hello")
    reply = [line for line in lines[asked + 1 : lines.index(">>>", asked)] if line]
    assert reply, f"no reply on screen: {lines}"

    terminal.type('"""First line of a message,')
    terminal.wait_for(lambda lines: any(line.startswith("...") for line in lines), "the ... continuation")
    terminal.type('and its second line."""')
    lines = terminal.wait_for(lambda lines: prompts(lines) == 4, "the multi-line reply")
    assert '>>> """First line of a message,' in lines and '... and its second line."""' in lines

    terminal.type("/bye")
    lines = terminal.wait_for(lambda lines: any(line.startswith("EXIT=") for line in lines), "slm run to exit")
    assert "EXIT=0" in lines


def test_set_parameter_verbose_and_ctrl_c(terminal: Terminal) -> None:
    terminal.wait_for(lambda lines: prompts(lines) == 1, "the first >>> prompt", timeout=60)
    terminal.type("/set parameter num_predict 4")
    terminal.type("/set parameter temperature 0")  # greedy: a random draw may end the reply before 4 tokens
    terminal.type("/set verbose")
    terminal.wait_for(lambda lines: "Set 'verbose' mode." in lines, "the /set answers")
    assert "Set parameter 'num_predict' to '4'" in terminal.screen()

    terminal.type("Tell me a story.")
    # the server stopped after the 4 tokens the option asked for, and the statistics follow the reply
    terminal.wait_for(lambda lines: "eval count:           4 token(s)" in lines, "4 tokens and the statistics")

    # A fresh conversation: after the cut-off " I'm sorry" the model only apologizes (8 tokens, over before a ^C
    # can reach it); alone, this question makes the greedy reply repeat it until num_predict.
    terminal.type("/clear")
    terminal.wait_for(lambda lines: "Cleared session context" in lines, "the /clear answer")
    terminal.type("/set parameter num_predict 1500")
    terminal.type("List the numbers from 1 to 1000, one per line.")

    def replying(lines: list[str]) -> bool:
        asked = ">>> List the numbers from 1 to 1000, one per line."
        return asked in lines and any(line.strip() for line in lines[lines.index(asked) + 1 :])

    terminal.wait_for(replying, "the reply to start streaming")
    terminal.interrupt()
    lines = terminal.wait_for(lambda lines: lines[-1:] == [">>>"] and "^C" in "\n".join(lines), "^C and a prompt")
    asked = lines.index(">>> List the numbers from 1 to 1000, one per line.")
    assert not any(line.startswith("eval count:") for line in lines[asked:]), "an interrupted reply has no stats"

    terminal.type("/bye")
    lines = terminal.wait_for(lambda lines: any(line.startswith("EXIT=") for line in lines), "slm run to exit")
    assert "EXIT=0" in lines
