"""What the next decode step evaluates: pure planning, no native calls (unit-tested on its own).

A step is a list of llama.cpp decode calls. The first carries the next token of every sequence that is generating
(one token each, its logits wanted), in sequence id order; then come prompt chunks of admitted sequences, taken in
admission order while the step's prompt budget lasts (:func:`prompt_budget`: all of ``n_batch`` when nobody
generates or more prompts wait than sequences generate, otherwise a slice about as long to evaluate as the generating
call itself, so a burst of arrivals never stalls decoding for more than one short step), each in a call of its own
unless it has the same length as the chunk of the sequence id before it (:func:`group_chunks`). Only the
chunk holding a prompt's last token asks for logits, so the sequence samples its first token in that same step.
Running sequences advance every step while prompts are fed in beside them (continuous batching).

Why a prompt chunk shares a call only with chunks of its own length: llama.cpp splits a call into micro-batches with
an equal number of tokens per sequence. Chunks of equal length (at least MIN_CHUNK tokens, consecutive sequence ids)
form one micro-batch in which each sequence's rows are its whole chunk, and their cells and logits are bit-identical
to the chunk's evaluated alone (2, 4 and 8 chunks of 16, 23 and 48 tokens, measured with the batch-invariant
settings). Chunks of different lengths would be cut to the shortest, and a piece of a few tokens rounds differently
(up to 0.77 in a logit for chunks of 20, 24, 28 and 32 in one call); the generating call's one token per sequence
likewise never shares a call with a prompt chunk. So every sequence's arithmetic is that of a run alone, and greedy
outputs do not depend on load.

Why a chunk may be cut almost anywhere: a token's KV cells and logits are bit-identical whether it is evaluated in a
chunk of 16, 17, 64 or 512 tokens of its sequence (measured with the batch-invariant settings), but calls with only a
few tokens of a sequence take other CPU kernels, which round differently (up to 0.7 in a logit; :data:`MIN_CHUNK`).
So the budget may slice a prompt anywhere that leaves chunks of at least MIN_CHUNK tokens, and its output is the same
as when it runs alone; a prompt shorter than that is always read in one call. For the same reason a cached prefix
can be reused up to any position whose cells such chunks computed (the prompt cache, :mod:`.llama_batch`).

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

__all__ = [
    "FILLER_TOKEN",
    "MAX_FILLED_GAP",
    "MIN_CHUNK",
    "BatchEntry",
    "Schedulable",
    "StepCosts",
    "group_chunks",
    "plan_step",
    "prompt_budget",
]

MAX_FILLED_GAP = 2
"""The longest run of vacant sequence ids between generating ones that is filled rather than split. Measured on 2
CPU cores with Gemma 3 270M: a token row costs about 6 ms, an extra pass over the weights about 15 ms."""

MIN_CHUNK = 16
"""The fewest tokens of one prompt evaluated in one call, unless the whole prompt is shorter: calls with fewer tokens
of a sequence take other CPU kernels, and their cells differ from the same tokens evaluated in a larger chunk (measured
on llama.cpp's CPU backend with Gemma 3 270M Q4_K_M, a 300-token prompt: one token per call or chunks of 2-8 tokens
differ from one call by up to 0.7 in a logit; chunks of 12, 15, 16, 17, 31, 32, 64 or 256 tokens, mixed cuts and a
cached prefix are bit-identical; 16 keeps a margin above the switch, ggml's tiled kernel from
:data:`~slm_runtime.engines.cpu_kernels.TILED_MIN_ROWS` rows on)."""

MIN_SLICE = MIN_CHUNK
"""The smallest prompt budget of a step while sequences generate (one minimal chunk: about 30 ms on 2 CPU cores for
Gemma 3 270M at about 2 ms per prompt token)."""

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
    sequences: Sequence[Schedulable],
    n_batch: int,
    free_positions: Mapping[int, int] | None = None,
    budget: int | None = None,
) -> list[list[BatchEntry]]:
    """The decode calls of the next step: the generating sequences' tokens, then prompt chunks, one per call.

    ``free_positions`` maps the sequence ids that can take a filler to the next free position of their cache
    stream (ids that are not generating; absent: no filler for that id). ``budget`` is how many prompt tokens the
    step may evaluate (:func:`prompt_budget`; None: ``n_batch``); a chunk may exceed it by one token rather than
    leave a lone last token behind.
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
    left_in_step = n_batch if budget is None else max(budget, MIN_CHUNK)
    chunks: list[BatchEntry] = []
    for seq in sequences:
        left = seq.prompt_left
        if seq.next_token is not None or not left:
            continue
        size = chunk_size(len(left), min(left_in_step, n_batch), n_batch)
        if size == 0:
            break  # the step's budget is spent
        chunks.append(BatchEntry(seq.seq_id, tuple(left[:size]), seq.position, size == len(left)))
        left_in_step -= size
    return calls + group_chunks(chunks, n_batch)


def group_chunks(chunks: Sequence[BatchEntry], n_batch: int) -> list[list[BatchEntry]]:
    """The prompt chunks of a step as decode calls: chunks of the same length (at least :data:`MIN_CHUNK` tokens) of
    consecutive sequence ids share a call, up to ``n_batch`` tokens; every other chunk has a call of its own.

    llama.cpp then evaluates the shared call as one micro-batch with that many tokens of each sequence, whose cells
    and logits are bit-identical to each chunk's evaluated alone (measured with the batch-invariant settings), for
    one pass over the weights instead of one per chunk. Chunks of different lengths would be split into micro-batches
    of the shortest length, and a shorter chunk's rows round differently; shorter chunks take other kernels."""
    calls: list[list[BatchEntry]] = []
    for chunk in sorted(chunks, key=lambda entry: entry.seq_id):
        call = calls[-1] if calls else None
        if (
            call is not None
            and len(chunk.tokens) >= MIN_CHUNK
            and len(chunk.tokens) == len(call[-1].tokens)
            and chunk.seq_id == call[-1].seq_id + 1
            and len(chunk.tokens) * (len(call) + 1) <= n_batch
        ):
            call.append(chunk)
        else:
            calls.append([chunk])
    return calls


def chunk_size(left: int, room: int, n_batch: int) -> int:
    """How many of a prompt's ``left`` tokens the next chunk takes with ``room`` tokens of budget (0: none this step).

    At most ``n_batch`` (one call) and never fewer than :data:`MIN_CHUNK` unless that is all there is, and never
    leaving fewer than MIN_CHUNK behind: the chunk then takes them too (up to MIN_CHUNK - 1 over the budget) or, at
    ``n_batch``, leaves exactly MIN_CHUNK. With ``n_batch`` under MIN_CHUNK every chunk is ``n_batch`` tokens (the last
    the rest), the same cut under any load, taken only where it fits the budget."""
    if n_batch < MIN_CHUNK:
        size = min(left, n_batch)
        return size if size <= room else 0
    if left <= room:
        return left
    if room < MIN_CHUNK:
        return 0
    if left - room >= MIN_CHUNK:
        return min(room, n_batch)
    if left <= n_batch:
        return left
    return min(room, n_batch, left - MIN_CHUNK)


@dataclass(frozen=True)
class StepCosts:
    """What the last steps cost, as the decoder measured them (seconds; 0.0: not measured yet)."""

    per_prompt_token: float = 0.0
    """Evaluating one prompt token in a chunk."""
    generating_call: float = 0.0
    """The call that carries one token of every generating sequence."""


def prompt_budget(n_batch: int, waiting: int, generating: int, costs: StepCosts) -> int:
    """How many prompt tokens the next step evaluates.

    All of ``n_batch`` when nothing generates, or when at least as many prompts wait as sequences generate (a stall
    then delays fewer tokens than reading the prompts at once saves first tokens). Otherwise a slice that takes
    about as long as the generating call (so the generating sequences' next token comes at most about twice as late
    as without prompts), at least :data:`MIN_SLICE` tokens.
    """
    if generating == 0 or waiting >= generating:
        return n_batch
    if costs.per_prompt_token <= 0.0 or costs.generating_call <= 0.0:
        return min(MIN_SLICE, n_batch)
    slice_tokens = int(costs.generating_call / costs.per_prompt_token)
    return max(MIN_SLICE, min(slice_tokens, n_batch))


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
