"""`slm run`: a one-shot answer or an interactive chat, streamed, in the manner of `ollama run`.

Interactive input: ``>>> `` prompts a message; a message opening with \"\"\" continues over lines (``... ``)
until a line ending with \"\"\"; /bye (or Ctrl-D) leaves; /clear forgets the conversation; /? lists commands.
Ctrl-C stops the reply being streamed and keeps the chat going.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TextIO

from slm_operator.local.client import ClientError, StreamChunk

__all__ = ["ChatClient", "ChatSession", "read_message", "repl", "stream_reply"]

HELP = """Available commands:
  /clear          Forget the conversation so far
  /bye            Exit
  /?, /help       Show this help
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
    """The conversation: messages replayed first (spec.messages), then the turns of this session."""

    client: ChatClient
    model: str
    preamble: list[dict[str, str]] = field(default_factory=list)
    history: list[dict[str, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def messages(self, user_text: str) -> list[dict[str, str]]:
        return [*self.preamble, *self.history, {"role": "user", "content": user_text}]

    def clear(self) -> None:
        self.history.clear()


def stream_reply(session: ChatSession, text: str, out: TextIO) -> str:
    """Send ``text``, write the reply to ``out`` as it streams, and keep the turn in the history.

    A KeyboardInterrupt stops the stream; what arrived so far is kept as the reply.
    """
    reply: list[str] = []
    try:
        for chunk in session.client.chat(session.model, session.messages(text), session.options or None):
            piece = chunk.text if reply else chunk.text.lstrip()  # SentencePiece models open with a space
            if piece:
                reply.append(piece)
                out.write(piece)
                out.flush()
    except KeyboardInterrupt:
        out.write("\n^C")
    answer = "".join(reply)
    session.history += [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]
    return answer


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
        if command.startswith("/") and " " not in command:
            out.write(f"Unknown command '{command}'. Type /? for help\n")
            continue
        try:
            stream_reply(session, text, out)
        except ClientError as exc:
            out.write(f"Error: {exc}\n")
        out.write("\n\n")
        out.flush()
