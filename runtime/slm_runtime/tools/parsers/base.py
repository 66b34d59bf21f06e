"""The streaming half every tool-call parser shares: what may go to the client now, and what must wait.

A family's calls begin with a marker. Some markers may appear anywhere in a reply (``<tool_call>``,
``[TOOL_CALLS]``); others count only at the very start of it (Llama 3's bare ``{"name": ...}``, the generic JSON
shape), because text that merely contains a brace is not a call. :meth:`ToolCallParser.feed` passes plain text
through at once and holds back only what might still become a marker, and trailing white space (the line break
between text and a call is not content); from the first marker on it holds everything, and
:meth:`ToolCallParser.finish` hands the held text to the family's :meth:`~ToolCallParser.extract`. Text that
looked like a call but does not parse comes back as content, white space included.

Every family also accepts the generic JSON shape at the start of a reply: the prompt asks for it whenever the
template could not show the tools itself, whatever the family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from slm_runtime.tools.parsers.generic_shape import GENERIC_LEADING, extract_generic
from slm_runtime.tools.types import ToolCall

__all__ = ["Extracted", "ToolCallParser"]

Extracted = tuple[str, list[ToolCall]]


class ToolCallParser(ABC):
    """Separates one reply's tool calls from its content while the reply streams in. One instance per reply."""

    family: str = ""
    anywhere: tuple[str, ...] = ()
    """Markers that start a call wherever they appear."""
    leading: tuple[str, ...] = ()
    """Markers that start a call only at the beginning of the reply (after white space)."""

    def __init__(self) -> None:
        self._pending = ""
        self._held: str | None = None
        self._gap = ""  # the white space between the content and the held text
        self._held_at_start = False
        self._at_start = True

    @abstractmethod
    def extract(self, text: str) -> Extracted | None:
        """The content and calls in ``text``, which begins with one of this family's markers; None if it holds
        no call of this family (it is then returned as content)."""

    def _leading_markers(self) -> tuple[str, ...]:
        return (*self.leading, *GENERIC_LEADING)

    def feed(self, text: str) -> str:
        """Take the next piece of the reply; return the text that is certainly content and may be sent now."""
        if self._held is not None:
            self._held += text
            return ""
        self._pending += text
        if self._at_start:
            lead = self._pending.lstrip()
            if not lead:
                return ""
            markers = self._leading_markers()
            if any(lead.startswith(marker) for marker in markers):
                self._held, self._held_at_start, self._pending = lead, True, ""
                return ""
            if any(marker.startswith(lead) for marker in markers):
                return ""
            self._at_start = False
        return self._scan()

    def _scan(self) -> str:
        found = [index for marker in self.anywhere if (index := self._pending.find(marker)) >= 0]
        if found:
            index = min(found)
            before = self._pending[:index]
            out = before.rstrip()
            self._gap, self._held, self._pending = before[len(out) :], self._pending[index:], ""
            return out
        keep = self._possible_marker_start()
        out = self._pending[: len(self._pending) - keep].rstrip()
        self._pending = self._pending[len(out) :]
        return out

    def _possible_marker_start(self) -> int:
        """The length of the longest end of the pending text that a marker could begin with."""
        longest = 0
        for marker in self.anywhere:
            for size in range(min(len(marker) - 1, len(self._pending)), longest, -1):
                if self._pending.endswith(marker[:size]):
                    longest = size
                    break
        return longest

    def finish(self) -> Extracted:
        """The end of the reply: the content not yet returned by :meth:`feed`, and the calls."""
        if self._held is None:
            rest, self._pending = self._pending, ""
            return rest, []
        held, self._held = self._held, None
        result = self.extract(held)
        if result is None and self._held_at_start:
            result = extract_generic(held)
        return result if result is not None else (self._gap + held, [])
