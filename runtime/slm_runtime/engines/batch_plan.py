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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["BatchEntry", "Schedulable", "plan_step"]


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


def plan_step(sequences: Sequence[Schedulable], n_batch: int) -> list[list[BatchEntry]]:
    """The decode calls of the next step: the generating sequences' tokens, then prompt chunks, one per call."""
    if n_batch < 1:
        raise ValueError("n_batch must be >= 1")
    calls: list[list[BatchEntry]] = []
    generating = [
        BatchEntry(seq.seq_id, (seq.next_token,), seq.position, True)
        for seq in sorted(sequences, key=lambda seq: seq.seq_id)
        if seq.next_token is not None
    ]
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
