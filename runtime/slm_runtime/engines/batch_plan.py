"""What the next decode step evaluates: pure planning, no native calls (unit-tested on its own).

A step is a list of llama.cpp decode calls. The first carries the next token of every sequence that is generating
(one token each, its logits wanted), in sequence id order; then come prompt chunks of newly admitted sequences in
admission order, each in a call of its own, while they fit in ``n_batch`` prompt tokens per step (the first one
always does). A prompt is cut into chunks at multiples of ``n_batch`` from its start, exactly as when it runs alone;
only the chunk holding a prompt's last token asks for logits, so the sequence samples its first token in that same
step. Running sequences advance every step while prompts are fed in beside them (continuous batching).

Why a prompt chunk never shares a call with other sequences: llama.cpp splits a call into micro-batches with an
equal number of tokens per sequence, and the rounding of a sequence's activations then depends on which other
sequences share its micro-batch. Evaluating each prompt chunk on its own (and one token per sequence in the shared
call) keeps every sequence's arithmetic identical to a run alone, so greedy outputs do not depend on load.

Why the generating tokens are sorted by sequence id: with a KV stream per sequence, llama.cpp puts only a run of
*consecutive* sequence ids (in batch order) into one micro-batch. Tokens of sequences 0, 2, 1, 3 would take
two micro-batches, each a full pass over the weights, and decoding a step would cost twice as much.

For the same reason a short gap between generating sequences (sequences 0, 1 and 3 generate, 2 is idle or still
reading its prompt) gets *filler* tokens: one token per vacant id, at the next free position of its cache stream,
without logits. The decoder removes their cells right after the call. A filler costs one token row; a gap costs a
whole extra pass, so gaps of up to :data:`MAX_FILLED_GAP` ids are filled and longer ones left to the split.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["FILLER_TOKEN", "MAX_FILLED_GAP", "BatchEntry", "Schedulable", "plan_step"]

MAX_FILLED_GAP = 2
"""The longest run of vacant sequence ids between generating ones that is filled rather than split. Measured on 2
CPU cores with Gemma 3 270M: a token row costs about 6 ms, an extra pass over the weights about 15 ms."""

FILLER_TOKEN = 0
"""The token a filler carries (any valid id: its output is never read and its cell is removed)."""


class Schedulable(Protocol):
    """What planning reads of a sequence."""

    @property
    def seq_id(self) -> int: ...

    @property
    def position(self) -> int:
        """Tokens of this sequence already in the KV cache (the position of its next token)."""
        ...

    @property
    def next_token(self) -> int | None:
        """The sampled token to feed next, or None while its prompt is still being evaluated."""
        ...

    @property
    def prompt_left(self) -> Sequence[int]:
        """Prompt tokens not yet evaluated."""
        ...


@dataclass(frozen=True)
class BatchEntry:
    """A run of tokens of one sequence: ``tokens`` at positions ``position``, ``position + 1``, ...

    ``sample`` is True when the last token's logits are wanted (a generating step, or a prompt's last chunk).
    """

    seq_id: int
    tokens: tuple[int, ...]
    position: int
    sample: bool
    filler: bool = False
    """A filler in a gap between generating sequences: decoded, then its cell removed (see the module doc)."""


def plan_step(
    sequences: Sequence[Schedulable], n_batch: int, free_positions: Mapping[int, int] | None = None
) -> list[list[BatchEntry]]:
    """The decode calls of the next step: the generating sequences' tokens, then prompt chunks, one per call.

    ``free_positions`` maps the sequence ids that can take a filler to the next free position of their cache
    stream (ids that are not generating; absent: no filler for that id).
    """
    if n_batch < 1:
        raise ValueError("n_batch must be >= 1")
    calls: list[list[BatchEntry]] = []
    generating = [
        BatchEntry(seq.seq_id, (seq.next_token,), seq.position, True)
        for seq in sorted(sequences, key=lambda seq: seq.seq_id)
        if seq.next_token is not None
    ]
    generating = _fill_gaps(generating, free_positions or {}, n_batch)
    for start in range(0, len(generating), n_batch):
        calls.append(generating[start : start + n_batch])
    budget = n_batch
    for seq in sequences:
        left = seq.prompt_left
        if seq.next_token is not None or not left:
            continue
        size = min(len(left), n_batch - seq.position % n_batch)
        if size > budget:
            break  # the step is full (a first chunk always fits: it is at most n_batch)
        calls.append([BatchEntry(seq.seq_id, tuple(left[:size]), seq.position, size == len(left))])
        budget -= size
    return calls


def _fill_gaps(generating: list[BatchEntry], free_positions: Mapping[int, int], n_batch: int) -> list[BatchEntry]:
    """``generating`` (sorted by id) with fillers in every gap of up to MAX_FILLED_GAP ids that can take them."""
    fillers: list[BatchEntry] = []
    for before, after in itertools.pairwise(generating):
        gap = range(before.seq_id + 1, after.seq_id)
        if 0 < len(gap) <= MAX_FILLED_GAP and all(seq_id in free_positions for seq_id in gap):
            fillers += [BatchEntry(i, (FILLER_TOKEN,), free_positions[i], False, filler=True) for i in gap]
    if not fillers or len(generating) + len(fillers) > n_batch:
        return generating
    return sorted([*generating, *fillers], key=lambda entry: entry.seq_id)
