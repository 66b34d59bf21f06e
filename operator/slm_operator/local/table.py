"""Plain-text tables and human units for the CLI, in the shape `ollama list` prints them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

__all__ = ["human_age", "human_size", "render_table"]


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns separated by three spaces; a trailing newline."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in [headers, *rows]
    ]
    return "\n".join(lines) + "\n"


def human_size(count: int) -> str:
    """Decimal units like Ollama: '253 MB', '1.9 GB'."""
    value = float(count)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{int(value)} {unit}" if unit in ("B", "KB", "MB") else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_age(when: datetime, now: datetime | None = None) -> str:
    """'Less than a second ago', '5 minutes ago', '2 days ago'."""
    seconds = int(((now or datetime.now(UTC)) - when).total_seconds())
    if seconds < 1:
        return "Less than a second ago"
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    raise AssertionError("unreachable")
