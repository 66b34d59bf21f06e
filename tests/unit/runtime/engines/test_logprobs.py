"""Log-probabilities from a logits row: the log-softmax in float64's agreement, a real distribution, the chosen
token's value equal to its top-list entry, ties broken by id, and the row itself never written."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from slm_runtime.engines.logprobs import step_logprobs

VOCAB = 50_000


def reference(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    return wide - (wide.max() + np.log(np.exp(wide - wide.max()).sum()))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_are_the_log_softmax_and_the_top_list_is_sorted(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(0, 4, VOCAB) + 30).astype(np.float32)  # large logits: the max must be subtracted
    before = logits.copy()
    scratch = np.empty(VOCAB, dtype=np.float32)
    token = int(rng.integers(VOCAB))
    chosen, top = step_logprobs(logits, token, 20, scratch)
    assert np.array_equal(logits, before)
    expected = reference(logits)
    assert chosen == pytest.approx(expected[token], abs=1e-5)
    assert [t for t, _ in top] == list(np.argsort(-expected, kind="stable")[:20])
    assert [v for _, v in top] == pytest.approx(list(np.sort(expected)[::-1][:20]), abs=1e-5)
    assert sum(math.exp(v) for _, v in top) <= 1.0
    assert all(a >= b for (_, a), (_, b) in itertools.pairwise(top))


def test_the_chosen_token_has_exactly_its_top_list_value() -> None:
    logits = np.random.default_rng(3).normal(0, 2, VOCAB).astype(np.float32)
    best = int(logits.argmax())
    chosen, top = step_logprobs(logits, best, 5, np.empty(VOCAB, dtype=np.float32))
    assert top[0] == (best, chosen)


def test_ties_go_to_the_lower_id_and_k_is_bounded_by_the_vocabulary() -> None:
    logits = np.zeros(8, dtype=np.float32)
    logits[[5, 2, 7]] = 1.0
    chosen, top = step_logprobs(logits, 0, 3, np.empty(8, dtype=np.float32))
    assert [t for t, _ in top] == [2, 5, 7]
    _, everything = step_logprobs(logits, 0, 100, np.empty(8, dtype=np.float32))
    assert len(everything) == 8
    assert sum(math.exp(v) for _, v in everything) == pytest.approx(1.0)
    assert chosen == pytest.approx(-math.log(3 * math.e + 5))


def test_zero_asks_only_for_the_chosen_token() -> None:
    logits = np.arange(10, dtype=np.float32)
    chosen, top = step_logprobs(logits, 9, 0, np.empty(16, dtype=np.float32))
    assert top == ()
    assert chosen == pytest.approx(reference(logits)[9])


def test_masked_logits_have_no_probability() -> None:
    logits = np.array([0.0, -np.inf, 1.0, -np.inf], dtype=np.float32)
    _, top = step_logprobs(logits, 2, 4, np.empty(4, dtype=np.float32))
    assert [t for t, _ in top] == [2, 0, 1, 3]
    assert top[2][1] == -math.inf
