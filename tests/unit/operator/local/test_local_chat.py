"""The `slm run` REPL: multi-line input, commands, streaming and the conversation it keeps."""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from slm_operator.local.chat import ChatSession, format_stats, read_message, repl, stream_reply
from slm_operator.local.client import ClientError, StreamChunk


class FakeClient:
    """Answers every chat with 'reply N' in two chunks; records what it was sent."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.sent: list[list[dict[str, str]]] = []
        self.fail_on = fail_on

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], options: Mapping[str, Any] | None = None
    ) -> Iterator[StreamChunk]:
        self.sent.append([dict(m) for m in messages])
        if self.fail_on and self.fail_on in messages[-1]["content"]:
            raise ClientError("model overloaded")
        yield StreamChunk(text="reply ", done=False)
        yield StreamChunk(text=str(len(self.sent)), done=False)
        yield StreamChunk(text="", done=True, stats={"eval_count": 2})


def reader(lines: list[str]) -> Any:
    prompts: list[str] = []

    def read(prompt: str) -> str:
        prompts.append(prompt)
        if not lines:
            raise EOFError
        return lines.pop(0)

    read.prompts = prompts  # type: ignore[attr-defined]
    return read


def test_read_message_single_and_multi_line() -> None:
    assert read_message(reader(["hello"])) == "hello"
    assert read_message(reader(['"""one line"""'])) == "one line"
    read = reader(['"""first', "second", 'third"""'])
    assert read_message(read) == "first\nsecond\nthird"
    assert read.prompts == [">>> ", "... ", "... "]
    assert read_message(reader(['"""', "body", '"""'])) == "body"


def test_repl_streams_keeps_history_and_leaves_on_bye() -> None:
    client = FakeClient()
    session = ChatSession(client=client, model="m", system="sys")
    out = io.StringIO()
    code = repl(session, reader(["hi", "", "/?", '"""multi', 'line"""', "/clear", "again", "/bye", "never"]), out)
    assert code == 0
    text = out.getvalue()
    assert "reply 1\n\n" in text and "reply 2\n\n" in text and "reply 3\n\n" in text
    assert 'Use """ to begin and end a multi-line message.' in text
    assert "Cleared session context" in text
    assert client.sent[0] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    assert client.sent[1] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "reply 1"},
        {"role": "user", "content": "multi\nline"},
    ]
    assert client.sent[2] == [{"role": "system", "content": "sys"}, {"role": "user", "content": "again"}]
    assert len(client.sent) == 3, "nothing is sent after /bye"


def test_repl_ends_at_end_of_input_and_reports_errors() -> None:
    out = io.StringIO()
    assert repl(ChatSession(client=FakeClient(fail_on="boom"), model="m"), reader(["boom", "/nope"]), out) == 0
    assert "Error: model overloaded" in out.getvalue()
    assert "Unknown command '/nope'. Type /? for help" in out.getvalue()


def test_one_shot_reply() -> None:
    session = ChatSession(client=FakeClient(), model="m")
    out = io.StringIO()
    assert stream_reply(session, "question", out) == "reply 1"
    assert out.getvalue() == "reply 1"
    assert session.history[-1] == {"role": "assistant", "content": "reply 1"}


class OptionsClient(FakeClient):
    def __init__(self) -> None:
        super().__init__()
        self.options: list[dict[str, Any] | None] = []

    def chat(
        self, model: str, messages: Sequence[Mapping[str, str]], options: Mapping[str, Any] | None = None
    ) -> Iterator[StreamChunk]:
        self.options.append(dict(options) if options else None)
        yield from super().chat(model, messages, options)


def test_set_commands_change_the_next_requests() -> None:
    client = OptionsClient()
    session = ChatSession(client=client, model="m")
    out = io.StringIO()
    lines = [
        "/set parameter num_predict 5",
        "/set parameter temperature 0.5",
        "/set parameter stop <end>",
        "/set system Answer in French.",
        "/set verbose",
        "hi",
        "/set bogus",
    ]
    assert repl(session, reader(lines), out) == 0
    assert client.options == [{"num_predict": 5, "temperature": 0.5, "stop": ["<end>"]}]
    assert client.sent[0][0] == {"role": "system", "content": "Answer in French."}
    text = out.getvalue()
    assert "Set parameter 'num_predict' to '5'" in text and "Set system message." in text
    assert "eval count:           2 token(s)" in text  # verbose statistics after the reply
    assert "Usage: /set parameter NAME VALUE" in text


def test_format_stats() -> None:
    stats = {
        "total_duration": 2_000_000_000,
        "load_duration": 1_000_000,
        "prompt_eval_count": 10,
        "prompt_eval_duration": 500_000_000,
        "eval_count": 30,
        "eval_duration": 1_500_000_000,
    }
    assert format_stats(stats).splitlines() == [
        "total duration:       2.000s",
        "load duration:        1.000ms",
        "prompt eval count:    10 token(s)",
        "prompt eval duration: 500.000ms",
        "prompt eval rate:     20.00 tokens/s",
        "eval count:           30 token(s)",
        "eval duration:        1.500s",
        "eval rate:            20.00 tokens/s",
    ]
