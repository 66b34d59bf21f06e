"""A generation read as an answer, API-neutral: what each step adds (:class:`Delta`: content, thinking, tool call
fragments, log-probabilities) and the whole at the end (:class:`Answer`), for one choice or several at once.

:func:`answer_events` turns one generation's events into ``Admitted``, deltas, then ``Finished`` through a
:class:`Shaper` (plain text, or a chat's thinking and tool calls: :mod:`slm_runtime.tool_chat`). :func:`merged`
runs the choices of an ``n > 1`` request together, each on its own slot, tagging every event with its choice's index;
closing it stops every generation. The serving modules put these in their wire formats.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Protocol

from slm_runtime.generation import Admitted, GenerationDone, GenerationEvent, TextChunk, TokenLogprob
from slm_runtime.tools.types import ToolCall

__all__ = [
    "Answer",
    "AnswerEvent",
    "CallDelta",
    "Delta",
    "Finished",
    "PlainShaper",
    "Shaper",
    "answer_events",
    "merged",
]


@dataclass(frozen=True)
class CallDelta:
    """A piece of tool call ``index``: its first piece has ``id`` and ``name``; ``arguments`` is a fragment of the
    arguments' JSON text (the fragments of a call, joined, are its arguments)."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Delta:
    """What one step adds to an answer; ``logprobs``: the tokens generated since the last delta (when asked; a
    parser may still hold back their text)."""

    content: str = ""
    thinking: str = ""
    calls: tuple[CallDelta, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.content or self.thinking or self.calls or self.logprobs)


@dataclass(frozen=True)
class Answer:
    """A whole answer: its content, thinking and tool calls, why it ended (``tool_calls`` when it called), and the
    generation's counters."""

    content: str
    done: GenerationDone
    thinking: str = ""
    calls: tuple[ToolCall, ...] = ()
    logprobs: tuple[TokenLogprob, ...] = ()

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.calls else self.done.done_reason


@dataclass(frozen=True)
class Finished:
    answer: Answer


AnswerEvent = Admitted | Delta | Finished


class Shaper(Protocol):
    """Reads a generation's text as it comes (pure, one per choice)."""

    def feed(self, text: str) -> Delta:
        """What ``text`` adds that can be sent now (a parser may hold back what could be a tool call's start)."""
        ...

    def finish(self, done: GenerationDone) -> tuple[Delta, Answer]:
        """What was held back, and the whole answer."""
        ...


@dataclass
class PlainShaper:
    """Text as it comes: completions and chats without tools or thinking."""

    _text: list[str] = field(default_factory=list)

    def feed(self, text: str) -> Delta:
        self._text.append(text)
        return Delta(content=text)

    def finish(self, done: GenerationDone) -> tuple[Delta, Answer]:
        return Delta(), Answer("".join(self._text), done)


async def answer_events(
    events: AsyncGenerator[GenerationEvent, None], shaper: Shaper
) -> AsyncGenerator[AnswerEvent, None]:
    """``events`` read through ``shaper``: Admitted, the deltas worth sending (each with the log-probabilities of
    the tokens since the last), then Finished."""
    logprobs: list[TokenLogprob] = []
    async with aclosing(events):
        async for event in events:
            if isinstance(event, TextChunk):
                delta = shaper.feed(event.text) if event.text else Delta()
                if event.logprobs:
                    logprobs.extend(event.logprobs)
                    delta = replace(delta, logprobs=event.logprobs)
                if delta:
                    yield delta
            elif isinstance(event, GenerationDone):
                tail, answer = shaper.finish(event)
                if tail:
                    yield tail
                yield Finished(replace(answer, logprobs=tuple(logprobs)))
            else:
                yield event


async def merged(choices: Sequence[AsyncGenerator[AnswerEvent, None]]) -> AsyncGenerator[tuple[int, AnswerEvent], None]:
    """The events of every choice as they come, as (choice index, event); an error in any choice ends it all.

    One choice is read directly; several run as tasks (each generation waits for its own slot), and closing this
    generator cancels them, which stops their generations."""
    if len(choices) == 1:
        async with aclosing(choices[0]) as only:
            async for event in only:
                yield 0, event
        return
    queue: asyncio.Queue[tuple[int, AnswerEvent | Exception | None]] = asyncio.Queue()

    async def pump(index: int, choice: AsyncGenerator[AnswerEvent, None]) -> None:
        try:
            async with aclosing(choice):
                async for event in choice:
                    queue.put_nowait((index, event))
        except Exception as exc:
            queue.put_nowait((index, exc))
        queue.put_nowait((index, None))  # this choice is over

    tasks = [asyncio.create_task(pump(i, choice)) for i, choice in enumerate(choices)]
    try:
        running = len(tasks)
        while running:
            index, item = await queue.get()
            if item is None:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
