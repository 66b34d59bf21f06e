"""`slm run`: a one-shot answer or an interactive chat, streamed, in the manner of `ollama run`.

Interactive input: ``>>> `` prompts a message; a message opening with \"\"\" continues over lines (``... ``)
until a line ending with \"\"\"; /bye (or Ctrl-D) leaves; /clear forgets the conversation; /? lists commands.
/set parameter NAME VALUE sets a request option (num_predict, temperature, stop ...), /set system TEXT replaces
the system prompt, /set verbose and /set quiet switch the timing statistics after each reply.
Ctrl-C stops the reply being streamed and keeps the chat going.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from slm_operator.local.client import ClientError, StreamChunk

__all__ = ["ChatClient", "ChatSession", "format_stats", "read_message", "repl", "set_command", "stream_reply"]

HELP = """Available commands:
  /set parameter NAME VALUE   Set a request option (temperature, num_predict, stop, seed ...)
  /set system TEXT            Replace the system prompt
  /set verbose, /set quiet    Show or hide timing statistics after each reply
  /clear                      Forget the conversation so far
  /bye                        Exit
  /?, /help                   Show this help
Use \"\"\" to begin and end a multi-line message.
"""

PROMPT = ">>> "
CONTINUATION = "... "
QUOTES = '"""'


class ChatClient(Protocol):
    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], options: Mapping[str, Any] | None = None
    ) -> Iterator[StreamChunk]: ...


@dataclass
class ChatSession:
    """The conversation: the turns of this session (the server puts spec.messages before them)."""

    client: ChatClient
    model: str
    history: list[dict[str, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    system: str | None = None
    verbose: bool = False
    last_stats: dict[str, Any] = field(default_factory=dict)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        system = [{"role": "system", "content": self.system}] if self.system is not None else []
        return [*system, *self.history, {"role": "user", "content": user_text}]

    def clear(self) -> None:
        self.history.clear()


def stream_reply(session: ChatSession, text: str, out: TextIO) -> str:
    """Send ``text``, write the reply to ``out`` as it streams, and keep the turn in the history.

    A KeyboardInterrupt stops the stream; what arrived so far is kept as the reply.
    """
    reply: list[str] = []
    session.last_stats = {}
    try:
        for chunk in session.client.chat(session.model, session.messages(text), session.options or None):
            if chunk.done:
                session.last_stats = chunk.stats
            piece = chunk.text if reply else chunk.text.lstrip()  # SentencePiece models open with a space
            if piece:
                reply.append(piece)
                out.write(piece)
                out.flush()
    except KeyboardInterrupt:  # the terminal has echoed ^C
        out.write("\n")
    answer = "".join(reply)
    session.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return answer


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def set_command(session: ChatSession, argument: str) -> str:
    """Apply ``/set ...``; return what to tell the user."""
    what, _, rest = argument.strip().partition(" ")
    if what == "parameter":
        name, _, value = rest.strip().partition(" ")
        if not name or not value:
            return "Usage: /set parameter NAME VALUE"
        if name == "stop":
            session.options.setdefault("stop", []).append(value)
        else:
            session.options[name] = _number(value)
        return f"Set parameter '{name}' to '{value}'"
    if what == "system" and rest.strip():
        session.system = rest.strip()
        return "Set system message."
    if what in ("verbose", "quiet"):
        session.verbose = what == "verbose"
        return f"Set '{what}' mode."
    return "Usage: /set parameter NAME VALUE | /set system TEXT | /set verbose | /set quiet"


def format_stats(stats: dict[str, Any]) -> str:
    """The timing block `ollama run --verbose` prints, from a final chunk's counters (nanoseconds)."""

    def seconds(key: str) -> float:
        return float(stats.get(key) or 0) / 1e9

    def rate(count_key: str, duration_key: str) -> str:
        duration = seconds(duration_key)
        return f"{int(stats.get(count_key) or 0) / duration:.2f} tokens/s" if duration > 0 else "n/a"

    rows = [
        ("total duration", f"{seconds('total_duration'):.3f}s"),
        ("load duration", f"{seconds('load_duration') * 1000:.3f}ms"),
        ("prompt eval count", f"{int(stats.get('prompt_eval_count') or 0)} token(s)"),
        ("prompt eval duration", f"{seconds('prompt_eval_duration') * 1000:.3f}ms"),
        ("prompt eval rate", rate("prompt_eval_count", "prompt_eval_duration")),
        ("eval count", f"{int(stats.get('eval_count') or 0)} token(s)"),
        ("eval duration", f"{seconds('eval_duration'):.3f}s"),
        ("eval rate", rate("eval_count", "eval_duration")),
    ]
    return "".join(f"{label + ':':<22}{value}\n" for label, value in rows)


def read_message(read: Callable[[str], str]) -> str | None:
    """One message from ``read`` (an ``input``-like function); None at end of input.

    A line starting with \"\"\" opens a block that ends at a line ending with \"\"\" (the quotes are dropped).
    """
    line = read(PROMPT)
    if not line.lstrip().startswith(QUOTES):
        return line
    body = line.lstrip()[len(QUOTES) :]
    if body.rstrip().endswith(QUOTES):
        return body.rstrip()[: -len(QUOTES)]
    lines = [body] if body else []
    while True:
        try:
            more = read(CONTINUATION)
        except EOFError:
            return "\n".join(lines)
        if more.rstrip().endswith(QUOTES):
            lines.append(more.rstrip()[: -len(QUOTES)])
            return "\n".join(lines).strip("\n")
        lines.append(more)


def repl(session: ChatSession, read: Callable[[str], str], out: TextIO) -> int:
    """The interactive loop; returns the exit code (0 on /bye or end of input)."""
    while True:
        try:
            text = read_message(read)
        except EOFError:
            out.write("\n")
            return 0
        except KeyboardInterrupt:
            out.write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        if text is None:
            return 0
        command = text.strip()
        if not command:
            continue
        if command in ("/bye", "/exit"):
            return 0
        if command in ("/?", "/help"):
            out.write(HELP)
            continue
        if command == "/clear":
            session.clear()
            out.write("Cleared session context\n")
            continue
        if command.startswith("/set ") or command == "/set":
            out.write(set_command(session, command.removeprefix("/set")) + "\n")
            continue
        if command.startswith("/") and " " not in command:
            out.write(f"Unknown command '{command}'. Type /? for help\n")
            continue
        try:
            stream_reply(session, text, out)
        except ClientError as exc:
            out.write(f"Error: {exc}\n")
        out.write("\n\n")
        if session.verbose and session.last_stats:
            out.write(format_stats(session.last_stats) + "\n")
        out.flush()
