"""Planning of continuous-batching steps: which tokens each llama.cpp decode call of a step carries."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from slm_runtime.engines.batch_plan import (
    FILLER_TOKEN,
    MAX_FILLED_GAP,
    MIN_CHUNK,
    MIN_SLICE,
    BatchEntry,
    StepCosts,
    group_chunks,
    plan_step,
    prompt_budget,
)


@dataclass
class Seq:
    seq_id: int
    prompt_left: Sequence[int] = field(default_factory=list)
    position: int = 0
    next_token: int | None = None


def advance(seqs: list[Seq], calls: list[list[BatchEntry]]) -> None:
    """What the decoder does after a step: move positions on, consume prompts, pretend to sample token 7."""
    by_id = {s.seq_id: s for s in seqs}
    for call in calls:
        for entry in call:
            seq = by_id[entry.seq_id]
            seq.position += len(entry.tokens)
            if seq.next_token is None:
                seq.prompt_left = list(seq.prompt_left)[len(entry.tokens) :]
            if entry.sample:
                seq.next_token = 7


def test_generating_sequences_share_one_call_with_one_token_each() -> None:
    seqs = [Seq(0, position=10, next_token=5), Seq(3, position=4, next_token=6)]
    assert plan_step(seqs, 512) == [[BatchEntry(0, (5,), 10, True), BatchEntry(3, (6,), 4, True)]]


def test_each_prompt_chunk_gets_a_call_of_its_own_after_the_generating_tokens() -> None:
    seqs = [Seq(0, position=3, next_token=9), Seq(1, prompt_left=[1, 2, 3]), Seq(2, prompt_left=[4, 5])]
    assert plan_step(seqs, 512) == [
        [BatchEntry(0, (9,), 3, True)],
        [BatchEntry(1, (1, 2, 3), 0, True)],
        [BatchEntry(2, (4, 5), 0, True)],
    ]


def test_a_long_prompt_is_read_in_calls_of_at_most_n_batch_and_samples_only_at_its_end() -> None:
    seq = Seq(0, prompt_left=list(range(10)))
    chunks = []
    while seq.next_token is None:
        calls = plan_step([seq], 4)
        chunks.append(calls)
        advance([seq], calls)
    assert chunks == [
        [[BatchEntry(0, (0, 1, 2, 3), 0, False)]],
        [[BatchEntry(0, (4, 5, 6, 7), 4, False)]],
        [[BatchEntry(0, (8, 9), 8, True)]],
    ]


def read_prompt(length: int, n_batch: int, budget: int | None, others: int = 0) -> list[int]:
    """The chunk sizes in which a prompt of ``length`` tokens is read, beside ``others`` generating sequences."""
    target = Seq(0, prompt_left=list(range(length)))
    seqs = [Seq(i + 1, position=1, next_token=1) for i in range(others)] + [target]
    sizes = []
    while target.next_token is None:
        calls = plan_step(seqs, n_batch, budget=budget)
        sizes += [len(e.tokens) for call in calls for e in call if e.seq_id == 0]
        advance(seqs, calls)
    return sizes


@pytest.mark.parametrize("length", [3, 15, 17, 31, 40, 100, 333])
@pytest.mark.parametrize(("n_batch", "budget"), [(64, None), (64, 16), (64, 20), (128, 33), (512, 16), (512, 512)])
def test_no_prompt_is_cut_into_a_chunk_shorter_than_min_chunk(length: int, n_batch: int, budget: int | None) -> None:
    """Calls with fewer than MIN_CHUNK tokens of a sequence round differently: whatever the budget, a prompt is cut
    only into chunks of at least MIN_CHUNK tokens (a shorter prompt is read whole)."""
    sizes = read_prompt(length, n_batch, budget, others=2)
    assert sum(sizes) == length
    assert min(sizes) >= min(MIN_CHUNK, length)
    assert max(sizes) <= n_batch


def test_a_chunk_goes_over_the_budget_rather_than_leave_a_short_rest() -> None:
    assert read_prompt(40, n_batch=512, budget=30, others=1) == [40]
    assert read_prompt(70, n_batch=64, budget=None) == [54, 16]
    assert read_prompt(48, n_batch=512, budget=16, others=1) == [16, 16, 16]


def test_a_prompt_shorter_than_min_chunk_is_read_in_one_call() -> None:
    assert read_prompt(MIN_CHUNK - 1, n_batch=512, budget=MIN_CHUNK) == [MIN_CHUNK - 1]
    assert read_prompt(1, n_batch=512, budget=MIN_CHUNK) == [1]


def test_below_min_chunk_n_batch_cuts_every_prompt_the_same_way() -> None:
    assert read_prompt(10, n_batch=4, budget=None) == read_prompt(10, n_batch=4, budget=3, others=2) == [4, 4, 2]


def test_the_budget_slices_a_prompt_while_others_generate() -> None:
    seqs = [Seq(0, position=5, next_token=3), Seq(1, prompt_left=list(range(40))), Seq(2, prompt_left=[1, 2])]
    calls = plan_step(seqs, 512, budget=20)
    assert [[(e.seq_id, len(e.tokens), e.sample) for e in call] for call in calls] == [
        [(0, 1, True)],
        [(1, 20, False)],
    ]


def test_the_budget_is_all_of_n_batch_when_nothing_generates_or_more_prompts_wait() -> None:
    costs = StepCosts(per_prompt_token=0.002, generating_call=0.06)
    assert prompt_budget(512, waiting=3, generating=0, costs=costs) == 512
    assert prompt_budget(512, waiting=7, generating=1, costs=costs) == 512
    assert prompt_budget(512, waiting=2, generating=2, costs=costs) == 512


def test_beside_more_generating_sequences_the_budget_is_as_long_as_their_call() -> None:
    costs = StepCosts(per_prompt_token=0.002, generating_call=0.06)
    assert prompt_budget(512, waiting=1, generating=7, costs=costs) == 30
    # Never below MIN_SLICE, never above n_batch, and MIN_SLICE until the costs are measured.
    assert prompt_budget(512, 1, 7, StepCosts(per_prompt_token=0.01, generating_call=0.02)) == MIN_SLICE
    assert MIN_SLICE >= MIN_CHUNK
    assert prompt_budget(20, 1, 7, StepCosts(per_prompt_token=0.0001, generating_call=0.06)) == 20
    assert prompt_budget(512, 1, 7, StepCosts()) == MIN_SLICE


def test_prompt_tokens_per_step_are_bounded_by_n_batch() -> None:
    seqs = [Seq(i, prompt_left=list(range(3))) for i in range(4)]
    calls = plan_step(seqs, 7)
    assert [(e.seq_id, len(e.tokens)) for call in calls for e in call] == [(0, 3), (1, 3)]
    advance(seqs, calls)
    calls = plan_step(seqs, 7)
    # The two sampled sequences generate in one call; the waiting prompts follow, again within the budget.
    assert [[(e.seq_id, len(e.tokens)) for e in call] for call in calls] == [[(0, 1), (1, 1)], [(2, 3)], [(3, 3)]]


def test_many_generating_sequences_are_split_into_calls_of_n_batch() -> None:
    seqs = [Seq(i, position=1, next_token=i) for i in range(5)]
    assert [[e.seq_id for e in call] for call in plan_step(seqs, 2)] == [[0, 1], [2, 3], [4]]


def test_nothing_to_do_plans_no_call() -> None:
    assert plan_step([], 8) == []


def test_n_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="n_batch"):
        plan_step([Seq(0, prompt_left=[1])], 0)


def test_shared_prefix_counts_leading_equal_tokens_up_to_a_limit() -> None:
    from slm_runtime.engines.llama_batch import shared_prefix

    assert shared_prefix([1, 2, 3, 4], [1, 2, 9], limit=10) == 2
    assert shared_prefix([1, 2, 3], [1, 2, 3], limit=2) == 2
    assert shared_prefix([], [1], limit=5) == 0
    assert shared_prefix([5], [1], limit=5) == 0


def test_generating_tokens_go_in_sequence_id_order_whatever_the_admission_order() -> None:
    """llama.cpp takes only consecutive sequence ids into one micro-batch: 2, 0, 1 would cost two passes."""
    seqs = [Seq(2, next_token=20, position=5), Seq(0, next_token=10, position=9), Seq(1, next_token=15, position=3)]
    (call,) = plan_step(seqs, n_batch=8)
    assert [entry.seq_id for entry in call] == [0, 1, 2]
    assert [entry.tokens for entry in call] == [(10,), (15,), (20,)]


def test_short_gaps_between_generating_sequences_get_fillers_at_the_free_positions() -> None:
    seqs = [Seq(0, next_token=10, position=9), Seq(2, next_token=20, position=5), Seq(5, next_token=50, position=7)]
    (call,) = plan_step(seqs, n_batch=16, free_positions={1: 0, 3: 12, 4: 3, 6: 0})
    assert call == [
        BatchEntry(0, (10,), 9, True),
        BatchEntry(1, (FILLER_TOKEN,), 0, False, filler=True),
        BatchEntry(2, (20,), 5, True),
        BatchEntry(3, (FILLER_TOKEN,), 12, False, filler=True),
        BatchEntry(4, (FILLER_TOKEN,), 3, False, filler=True),
        BatchEntry(5, (50,), 7, True),
    ]  # no filler after the last generating sequence: only gaps split a call


def test_long_gaps_and_ids_without_a_free_position_are_left_to_the_split() -> None:
    long_gap = [Seq(0, next_token=1, position=4), Seq(MAX_FILLED_GAP + 2, next_token=2, position=4)]
    free = dict.fromkeys(range(1, 8), 0)
    assert not any(entry.filler for call in plan_step(long_gap, 16, free) for entry in call)
    full_stream = [Seq(0, next_token=1, position=4), Seq(2, next_token=2, position=4)]
    assert not any(entry.filler for call in plan_step(full_stream, 16, {3: 0}) for entry in call)
    assert not any(entry.filler for call in plan_step(full_stream, 16) for entry in call)


def test_fillers_never_push_the_generating_call_past_n_batch() -> None:
    seqs = [Seq(0, next_token=1, position=4), Seq(2, next_token=2, position=4)]
    assert plan_step(seqs, 2, {1: 0}) == [[BatchEntry(0, (1,), 4, True), BatchEntry(2, (2,), 4, True)]]
    assert len(plan_step(seqs, 3, {1: 0})[0]) == 3


def test_a_cached_prefix_counts_from_a_chunk_on_and_another_slot_s_must_beat_the_own_by_a_chunk() -> None:
    from slm_runtime.engines.llama_batch import MIN_REUSED_PREFIX, prefix_source

    # Nothing held anywhere: start from scratch on the own slot.
    assert prefix_source(2, 0, []) == (2, 0)
    # A few shared leading tokens (<bos>, a turn marker) are read again, on the own slot as from another.
    assert prefix_source(2, 3, []) == (2, 0)
    assert prefix_source(2, MIN_REUSED_PREFIX - 1, [(0, 3), (1, MIN_REUSED_PREFIX - 1)]) == (2, 0)
    assert prefix_source(2, MIN_REUSED_PREFIX, []) == (2, MIN_REUSED_PREFIX)
    assert prefix_source(2, 3, [(1, MIN_REUSED_PREFIX)]) == (1, MIN_REUSED_PREFIX)
    # The own slot's prefix is kept in place: another slot must beat it by a whole chunk.
    assert prefix_source(2, 40, [(0, 40 + MIN_REUSED_PREFIX - 1)]) == (2, 40)
    assert prefix_source(2, 40, [(0, 40 + MIN_REUSED_PREFIX)]) == (0, 40 + MIN_REUSED_PREFIX)
    # Among slots worth copying from, the longest prefix wins.
    assert prefix_source(2, 0, [(0, 40), (1, 100), (3, 60)]) == (1, 100)


def chunk(seq_id: int, size: int, position: int = 0) -> BatchEntry:
    return BatchEntry(seq_id, tuple(range(size)), position, True)


def test_chunks_of_one_length_on_consecutive_ids_share_a_call() -> None:
    # A burst of equal-length prompts (cached prefixes of any length before them) is read in one call.
    burst = [chunk(2, 20, position=100), chunk(0, 20), chunk(1, 20, position=7)]
    assert group_chunks(burst, 512) == [[chunk(0, 20), chunk(1, 20, position=7), chunk(2, 20, position=100)]]


def test_chunks_of_other_lengths_short_chunks_and_gaps_get_calls_of_their_own() -> None:
    small = MIN_CHUNK - 1
    assert group_chunks([chunk(0, 20), chunk(1, 21)], 512) == [[chunk(0, 20)], [chunk(1, 21)]]
    assert group_chunks([chunk(0, small), chunk(1, small)], 512) == [[chunk(0, small)], [chunk(1, small)]]
    assert group_chunks([chunk(0, 20), chunk(2, 20)], 512) == [[chunk(0, 20)], [chunk(2, 20)]]
    # A run of equal chunks continues after a different one.
    assert [
        [e.seq_id for e in call] for call in group_chunks([chunk(i, 30 if i == 1 else 20) for i in range(4)], 512)
    ] == [
        [0],
        [1],
        [2, 3],
    ]


def test_a_shared_call_holds_at_most_n_batch_tokens() -> None:
    calls = group_chunks([chunk(i, 20) for i in range(5)], n_batch=64)
    assert [[e.seq_id for e in call] for call in calls] == [[0, 1, 2], [3, 4]]


def test_a_step_reads_a_burst_of_equal_prompts_in_one_call_beside_the_generating_call() -> None:
    seqs = [Seq(0, next_token=5, position=9), *[Seq(i, prompt_left=list(range(24))) for i in (1, 2, 3)]]
    calls = plan_step(seqs, 512)
    assert [[(e.seq_id, len(e.tokens)) for e in call] for call in calls] == [[(0, 1)], [(1, 24), (2, 24), (3, 24)]]
    assert all(entry.sample for entry in calls[1])
