"""Human units and tables as `ollama list` shows them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from slm_operator.local.table import human_age, human_size, render_table


def test_sizes() -> None:
    assert [human_size(n) for n in (0, 999, 1_000, 253_113_024, 1_900_000_000)] == [
        "0 B",
        "999 B",
        "1 KB",
        "253 MB",
        "1.9 GB",
    ]


def test_ages() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert human_age(now, now) == "Less than a second ago"
    assert human_age(now - timedelta(seconds=1), now) == "1 second ago"
    assert human_age(now - timedelta(minutes=5, seconds=3), now) == "5 minutes ago"
    assert human_age(now - timedelta(days=2), now) == "2 days ago"
    assert human_age(now - timedelta(days=15), now) == "2 weeks ago"


def test_table() -> None:
    assert render_table(["NAME", "ID"], [["a", "123"], ["long-name", ""]]) == (
        "NAME        ID\na           123\nlong-name\n"
    )
