"""Stop sequences across streamed pieces."""

from __future__ import annotations

from slm_runtime.stops import StopMatcher


def run(pieces: list[str], stops: list[str]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out = "".join(matcher.feed(p) for p in pieces)
    if not matcher.stopped:
        out += matcher.flush()
    return out, matcher.stopped


def test_stop_split_across_pieces() -> None:
    assert run(["Hello\nUs", "er: more"], ["\nUser:"]) == ("Hello", True)


def test_partial_match_is_released_when_it_diverges() -> None:
    assert run(["a\nU", "nrelated"], ["\nUser:"]) == ("a\nUnrelated", False)


def test_held_text_is_flushed_at_the_end() -> None:
    assert run(["end\nUs"], ["\nUser:"]) == ("end\nUs", False)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["one. two! three"], ["!", "."]) == ("one", True)


def test_no_stops_pass_through() -> None:
    matcher = StopMatcher([])
    assert matcher.feed("abc") == "abc"
    assert matcher.flush() == ""
