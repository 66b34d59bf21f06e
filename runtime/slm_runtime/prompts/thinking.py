"""Reasoning text ("thinking") apart from the answer, while a reply streams.

Reasoning models write their reasoning between tags at the start of the reply: ``<think>...</think>`` (Qwen 3,
DeepSeek R1, QwQ) or ``[THINK]...[/THINK]`` (Magistral). Which tags, if any, is read from the template's text
(:func:`thinking_tags`). Some templates open the tag themselves at the end of the prompt (DeepSeek R1's
``<｜Assistant｜><think>\\n``), so the reply starts inside the reasoning: :func:`opens_thinking` says so from the
rendered prompt, and the splitter is made with ``inside=True``.

Thinking is only recognised at the start of the reply: tags later on are content, as in Ollama and llama.cpp.
White space around the thinking and between it and the answer is dropped.
"""

from __future__ import annotations

__all__ = ["ThinkingSplitter", "opens_thinking", "thinking_tags"]

_TAGS = (("<think>", "</think>"), ("[THINK]", "[/THINK]"))


def thinking_tags(template_source: str) -> tuple[str, str] | None:
    """The opening and closing reasoning tags a template uses, or None if it shows no reasoning tags."""
    for open_tag, close_tag in _TAGS:
        if open_tag in template_source:
            return open_tag, close_tag
    return None


def opens_thinking(prompt: str, tags: tuple[str, str]) -> bool:
    """Whether the rendered prompt leaves the reply inside an opened (not yet closed) reasoning block."""
    return prompt.rstrip().endswith(tags[0])


def _partial_suffix(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that ``tag`` begins with (a tag split across pieces)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:size]):
            return size
    return 0


class ThinkingSplitter:
    """Splits one reply into (thinking, content) as it streams. One instance per reply."""

    def __init__(self, tags: tuple[str, str] = _TAGS[0], *, inside: bool = False) -> None:
        self._open, self._close = tags
        self._state = "thinking-start" if inside else "start"
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str]:
        """Take the next piece of the reply; return the (thinking, content) text that may be sent now."""
        self._pending += text
        thinking = content = ""
        while True:
            if self._state == "start":
                lead = self._pending.lstrip()
                if lead.startswith(self._open):
                    self._pending = lead[len(self._open) :]
                    self._state = "thinking-start"
                    continue
                if self._open.startswith(lead):
                    break  # empty, or a part of the opening tag
                self._state = "content"
                continue
            if self._state == "thinking-start":
                self._pending = self._pending.lstrip()
                if not self._pending:
                    break
                self._state = "thinking"
                continue
            if self._state == "thinking":
                end = self._pending.find(self._close)
                if end >= 0:
                    thinking += self._pending[:end].rstrip()
                    self._pending = self._pending[end + len(self._close) :]
                    self._state = "content-start"
                    continue
                # Hold back a possible start of the closing tag, and trailing white space (it may precede it).
                keep = _partial_suffix(self._pending, self._close)
                body = self._pending[: len(self._pending) - keep]
                settled = body.rstrip()
                thinking += settled
                self._pending = self._pending[len(settled) :]
                break
            if self._state == "content-start":
                self._pending = self._pending.lstrip()
                if not self._pending:
                    break
                self._state = "content"
                continue
            content += self._pending
            self._pending = ""
            break
        return thinking, content

    def finish(self) -> tuple[str, str]:
        """The end of the reply: the (thinking, content) text not yet returned. A reasoning block the reply never
        closed is thinking (the reply was cut off while reasoning)."""
        rest, self._pending = self._pending, ""
        if self._state in {"thinking", "thinking-start"}:
            return rest.strip(), ""
        if self._state == "content-start":
            return "", rest.lstrip()
        return "", rest
