"""Stop sequences over streamed text: emit what can no longer be the start of a stop sequence."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopMatcher"]


class StopMatcher:
    """Feed text pieces; get back the text safe to emit, holding back a possible partial stop sequence."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text to emit now; once a stop sequence is seen, ``stopped`` is True and nothing more comes."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        buffer = self._pending + text
        cut = min((i for i in (buffer.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return buffer[:cut]
        hold = 0
        for stop in self.stops:
            for length in range(min(len(stop) - 1, len(buffer)), 0, -1):
                if buffer.endswith(stop[:length]):
                    hold = max(hold, length)
                    break
        self._pending = buffer[len(buffer) - hold :] if hold else ""
        return buffer[: len(buffer) - hold]

    def flush(self) -> str:
        """The held-back text, at the end of a generation that did not hit a stop sequence."""
        pending, self._pending = self._pending, ""
        return "" if self.stopped else pending
