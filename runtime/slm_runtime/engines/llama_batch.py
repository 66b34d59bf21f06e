"""Continuous batching for llama.cpp: many generations decoded together in one context.

One llama context holds up to ``parallel`` sequences, each in its own KV cache stream (``kv_unified`` off, as
llama-server does by default): sequence *i* uses seq id *i* (the scheduler's slot) and ``context_length``
cells of its own. A single decoder thread runs the loop; every step decodes the next token of every generating
sequence in one call, then prompt chunks of newly admitted ones (:func:`plan_step`), and samples each
sequence that produced logits with its own sampler (:mod:`slm_runtime.engines.samplers`: its own temperature,
top-k/p, penalties, seed and grammar; for a plain greedy request the top logit directly), and computes the
log-probabilities a request asks for from the same logits (:mod:`slm_runtime.engines.logprobs`). The
generating tokens go into the call in sequence-id order, with fillers in short gaps, so that llama.cpp decodes them
in one pass over the weights (see :mod:`slm_runtime.engines.batch_plan`). A sequence that ends (end of
generation, ``max_tokens``, cancelled) frees its cells at once and its slot can take the next request.

Every sequence has its own cache stream and its prompt is evaluated in the same chunks as when it runs alone
(see :mod:`slm_runtime.engines.batch_plan`): with greedy sampling its tokens are the same whether it runs alone
or beside seven others.

With ``reuse_prefixes`` (the ``prompt_cache`` setting) a finished sequence leaves its cells in place,
and a new request skips re-evaluating the longest prefix it shares with what any slot holds: its own slot's cells
(multi-turn chat) or another slot's, copied with llama.cpp's sequence copy (a shared system prompt). Only cells that
a prompt chunk of at least :data:`~slm_runtime.engines.batch_plan.MIN_CHUNK` tokens computed are reused (a
generated token's cells come from a one-token call and would differ), so greedy output is the same with reuse on
and off.

Each generation delivers its tokens on the decoder thread to its :data:`~slm_runtime.engines.base.TokenSink`
(the server's mailbox, or the queue behind :meth:`~slm_runtime.engines.base.Engine.stream`); the per-step Python
work on the decoder thread stays small (fill the batch, decode, sample, post).
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from slm_runtime.engines.base import GeneratedToken, StepObserver, TokenSink
from slm_runtime.engines.batch_plan import MIN_CHUNK, BatchEntry, StepCosts, chunk_size, plan_step, prompt_budget
from slm_runtime.engines.cpu_kernels import TiledGate
from slm_runtime.engines.llama_native import quick_calls
from slm_runtime.engines.logprobs import StepLogprobs, step_logprobs
from slm_runtime.engines.samplers import StepLogits, TokenSampler

__all__ = [
    "MIN_REUSED_PREFIX",
    "BatchDecoder",
    "DecodeTarget",
    "Generation",
    "KeptCells",
    "prefix_source",
    "shared_prefix",
]

GATHER_SECONDS = 0.03
"""The longest an idle decoder waits for generations the server has admitted but not started yet (a burst of
requests being parsed and tokenized) before its first step: about a third of what reading one short prompt costs
on 2 CPU cores (a 45-token prompt: about 90 ms with Gemma 3 270M), so that the burst's prompts are read in one step
instead of the first sequence stalling behind the others' prompts."""

GATHER_POLL_SECONDS = 0.002
"""How often the gathering decoder looks at the count again (a start wakes it at once)."""

REREAD_CHUNK = 32
"""The most tokens an idle re-read evaluates in one call (about 60 ms on 2 CPU cores for Gemma 3 270M): a request
that arrives meanwhile waits at most that long for the decoder."""

REREAD_RETRY_SECONDS = 0.5
"""How often an idle decoder that holds a re-read back for arriving requests looks again (a start wakes it)."""

MIN_REUSED_PREFIX = MIN_CHUNK
"""The fewest cached tokens worth reusing, and the fewest more than its own slot holds worth copying from another
slot. Most prompts share ``<bos>`` and a turn marker with whatever a slot holds: reusing those few tokens saves a few
milliseconds, but it would leave equal prompts with unequal lengths to read (equal ones share a call,
:func:`~slm_runtime.engines.batch_plan.group_chunks`), and a copy from another slot copies that slot's whole KV stream
(llama.cpp copies streams, not cells)."""

COST_SMOOTHING = 0.2
"""Weight of the newest measurement in the running averages of what a step costs (:class:`StepCosts`)."""

log = logging.getLogger(__name__)


class Generation:
    """One sequence in the batch: its decoding state and where its tokens go (both used on the decoder thread)."""

    def __init__(
        self,
        seq_id: int,
        prompt: Sequence[int],
        max_tokens: int,
        sampler: TokenSampler,
        cancel: threading.Event,
        sink: TokenSink,
        logprobs: int | None = None,
    ) -> None:
        self.seq_id = seq_id
        self.position = 0
        self.evaluated: list[int] = []
        """Tokens in this sequence's KV cache, in order (what a later request may reuse as its prefix)."""
        self.cached = 0
        """Leading prompt tokens whose cells came from the prompt cache (reported with the first token)."""
        self.exact = 0
        """How many leading cells hold what a fresh prompt evaluation would compute (prompt chunks of at least
        MIN_CHUNK tokens): the part a later request may reuse without changing its output."""
        self.failed = False
        self.next_token: int | None = None
        self.prompt_left: Sequence[int] = list(prompt)
        self.max_tokens = max_tokens
        self.produced = 0
        self.sampler: TokenSampler | None = sampler
        """Chooses the tokens; the decoder closes it (and sets None) when the sequence ends."""
        self.logprobs = logprobs
        """None: no log-probabilities; k >= 0: the chosen token's and the k most likely (SamplingParams.logprobs)."""
        self.cancel = cancel
        """Set by the consumer to stop the sequence early; the decoder then drops it."""
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._sink = sink
        self._finished = False
        self._held: list[GeneratedToken | BaseException | None] | None = None

    def emit(self, token: int, piece: bytes, logprobs: StepLogprobs | None = None) -> None:
        cached = self.cached if self.produced == 0 else 0
        self.produced += 1
        text = self._utf8.decode(piece)
        if logprobs is None:
            self._put(GeneratedToken(token, text, cached_prompt_tokens=cached))
        else:
            self._put(GeneratedToken(token, text, logprobs[0], logprobs[1], cached))

    def fail(self, error: BaseException) -> None:
        self.failed = True
        self._put(error)

    def finish(self) -> None:
        """End the sink's stream (once): the sequence is dropped and its slot free."""
        if not self._finished:
            self._finished = True
            self._put(None)

    def hold(self) -> None:
        """Keep what the sink would get until :meth:`flush` (a first token waits for the end of its step)."""
        if self._held is None:
            self._held = []

    def flush(self) -> None:
        """Hand over what :meth:`hold` kept, in order, and stop holding."""
        held, self._held = self._held, None
        for item in held or ():
            self._sink(item)

    def _put(self, item: GeneratedToken | BaseException | None) -> None:
        if self._held is None:
            self._sink(item)
        else:
            self._held.append(item)


@dataclass(frozen=True)
class KeptCells:
    """What a finished sequence left in its slot's cache (prompt cache): the tokens whose cells are there, and how
    many leading ones are exact (:attr:`Generation.exact`); while the decoder is idle it re-reads the rest (the
    answer's tokens, whose cells one-token calls computed) in chunks, so that a follow-up turn reuses them too."""

    tokens: list[int]
    exact: int
    unread: list[int] = field(default_factory=list)
    """Tokens after ``tokens`` whose cells were dropped to be read again as a chunk (an idle re-read in progress)."""
    rereading: bool = True
    """Whether an idle re-read is still to do (False: done, or not possible)."""

    @property
    def reusable(self) -> list[int]:
        return self.tokens[: self.exact]


@dataclass(frozen=True)
class DecodeTarget:
    """The llama.cpp context the decoder drives, and its shape."""

    ctx: Any
    vocab: Any
    n_seq: int
    n_batch: int
    n_ctx_seq: int
    n_vocab: int
    n_swa: int = 0
    """The sliding window of the model's SWA layers when their cache keeps only the window (0: no such layers, or a
    full cache): a prefix is reusable only while the cells of its last window are still there."""
    tiled_gate: TiledGate | None = None
    """Keeps generating calls off ggml's tiled kernel and lets prompt calls use it (engines of 8 slots or more in the
    batch-invariant mode, :mod:`.cpu_kernels`); None: no call can reach the kernel's floor, or the fast mode."""


class BatchDecoder:
    """The decoder thread and the sequences it runs; ``submit`` from any thread, one sequence per seq id."""

    def __init__(
        self,
        target: DecodeTarget,
        *,
        reuse_prefixes: bool = False,
        observer: StepObserver | None = None,
    ) -> None:
        self.reuse_prefixes = reuse_prefixes
        self.observer = observer
        self.after_step: Callable[[], None] | None = None
        """Called on the decoder thread after each step (the server waits there for its tokens to go out)."""
        self.arrivals: Callable[[], int] | None = None
        """How many generations the server has admitted and not started yet (read on the decoder thread)."""
        self._kept: dict[int, KeptCells] = {}
        """Per seq id, what a finished sequence left in its cache (only when reusing prefixes)."""
        self.costs = StepCosts()
        """Running averages of what steps cost, for the prompt budget of the next step."""
        self._piece = ctypes.create_string_buffer(256)
        self._lock = threading.Condition()
        self._incoming: list[Generation] = []
        self._running: list[Generation] = []
        self._closed = False
        self._open(target)
        self._thread = threading.Thread(target=self._loop, name="slm-decoder", daemon=True)
        self._thread.start()

    def _open(self, target: DecodeTarget) -> None:
        import llama_cpp

        self._ctx = target.ctx
        self._vocab = target.vocab
        self._memory = llama_cpp.llama_get_memory(target.ctx)
        self.n_seq = target.n_seq
        self.n_batch = target.n_batch
        self.n_ctx_seq = target.n_ctx_seq
        self.n_vocab = target.n_vocab
        self.n_swa = target.n_swa
        self._gate = target.tiled_gate
        self._batch: Any = llama_cpp.llama_batch_init(target.n_batch, 0, 1)
        self._quick = quick_calls()
        self._scratch: np.ndarray[Any, np.dtype[np.float32]] | None = None
        """A vocabulary-sized buffer for log-probabilities, allocated when a request first asks for them."""

    def submit(self, generation: Generation) -> None:
        if not 0 <= generation.seq_id < self.n_seq:
            raise ValueError(f"seq id {generation.seq_id} out of range 0..{self.n_seq - 1}")
        with self._lock:
            if self._closed:
                raise RuntimeError("the decoder is closed")
            self._incoming.append(generation)
            self._lock.notify()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the decoder thread (running sequences end with an error) and free the batch."""
        import llama_cpp

        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive() and self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None

    # --- the loop ---------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            reread: int | None = None
            with self._lock:
                while not self._incoming and not self._running and not self._closed:
                    reread = self._next_reread()
                    if reread is not None:
                        break
                    self._lock.notify_all()  # idle with nothing to do: wake wait_settled()
                    # A re-read held back for arriving requests is looked at again if they never come.
                    self._lock.wait(None if self._pending_reread() is None else REREAD_RETRY_SECONDS)
                if self._closed:
                    break
                if reread is None:
                    if not self._running:
                        self._gather()
                    self._admit()
            if reread is not None:
                self._reread(reread)
                continue
            self._drop_stopped()
            if not self._running:
                continue
            try:
                self._step()
                if self.after_step is not None:
                    self.after_step()
            except Exception as exc:  # a failed decode must not kill the thread: fail the sequences instead
                log.exception("llama.cpp decode step failed")
                for generation in list(self._running):
                    generation.fail(exc)
                    self._release(generation)
        for generation in [*self._running, *self._incoming]:
            generation.fail(RuntimeError("the model is shutting down"))
            self._release(generation)
        self._incoming.clear()

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the decoder is idle with no re-read left to do; False at ``timeout``."""
        with self._lock:
            return self._lock.wait_for(
                lambda: not self._incoming and not self._running and self._pending_reread() is None, timeout
            )

    def _next_reread(self) -> int | None:
        """A slot whose kept cells an idle re-read would make exact (prompt cache), if any, and none while requests
        the server admitted are on their way (they come first)."""
        seq_id = self._pending_reread()
        if seq_id is None or (self.arrivals is not None and self.arrivals() > 0):
            return None
        return seq_id

    def _pending_reread(self) -> int | None:
        if not self.reuse_prefixes:
            return None
        return next((seq_id for seq_id, kept in list(self._kept.items()) if kept.rereading), None)

    def _reread(self, seq_id: int) -> None:
        """One call of an idle re-read of ``seq_id``'s kept tokens after its exact prefix (chunks of at least
        MIN_CHUNK tokens, after exact cells: the cells a fresh read of a prompt with these tokens computes)."""
        import llama_cpp

        kept = self._kept[seq_id]
        tokens = [*kept.tokens, *kept.unread]
        start = len(kept.tokens)
        if not kept.unread:
            start = max(0, min(kept.exact, len(tokens) - MIN_CHUNK))
            if len(tokens) < MIN_CHUNK or kept.exact >= len(tokens) or not self._window_holds(seq_id, start):
                self._kept[seq_id] = replace(kept, rereading=False)
                return
            llama_cpp.llama_memory_seq_rm(self._memory, seq_id, start, -1)
        size = chunk_size(len(tokens) - start, REREAD_CHUNK, self.n_batch)
        self._fill([BatchEntry(seq_id, tuple(tokens[start : start + size]), start, False)])
        if self._gate is not None:
            self._gate.allow(True)  # a prompt chunk
        if llama_cpp.llama_decode(self._ctx, self._batch) != 0:
            log.warning("seq %d: re-reading kept tokens failed; its cells are dropped", seq_id)
            self._clear(seq_id)
            return
        end = start + size
        self._kept[seq_id] = KeptCells(tokens[:end], end, tokens[end:], end < len(tokens))

    def _gather(self) -> None:
        """Idle until now: wait a moment (at most :data:`GATHER_SECONDS`, the lock held by the caller) for the
        generations the server has admitted and is about to start, while a slot is free for them, so that a burst
        of requests is read in one step and their first tokens go out together."""
        if self.arrivals is None:
            return
        deadline = time.monotonic() + GATHER_SECONDS
        while not self._closed and min(self.arrivals(), self.n_seq - len(self._incoming)) > 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._lock.wait(min(left, GATHER_POLL_SECONDS))

    def _admit(self) -> None:
        sources = list(self._running)  # sequences admitted in this same call have no cells yet to copy
        for generation in self._incoming:
            if any(other.seq_id == generation.seq_id for other in self._running):
                # The slot protocol prevents this; refuse rather than corrupt the running sequence's cache.
                generation.fail(RuntimeError(f"seq id {generation.seq_id} is already running"))
                generation.finish()
                continue
            self._reuse_or_clear(generation, sources)
            self._running.append(generation)
        self._incoming.clear()

    def _drop_stopped(self) -> None:
        for generation in [g for g in self._running if g.cancel.is_set()]:
            self._release(generation)

    def _step(self) -> None:
        # The sequences reading their prompt this step start together: a first token goes out at the end of the
        # step, not between the prompt calls of the others (its stream would stall right after it).
        starting = [g for g in self._running if g.next_token is None]
        for generation in starting:
            generation.hold()
        try:
            self._calls()
        finally:
            for generation in starting:
                generation.flush()

    def _calls(self) -> None:
        import llama_cpp

        by_id = {g.seq_id: g for g in self._running}
        generating = sum(1 for g in self._running if g.next_token is not None)
        budget = prompt_budget(self.n_batch, len(self._running) - generating, generating, self.costs)
        for entries in plan_step(self._running, self.n_batch, self._free_positions(by_id), budget):
            samples = self._fill(entries)
            if self._gate is not None:  # prompt calls may take ggml's tiled kernel (alone too), generating calls not
                self._gate.allow(not any(not e.filler and by_id[e.seq_id].next_token is not None for e in entries))
            started = time.perf_counter()
            rc = llama_cpp.llama_decode(self._ctx, self._batch)
            self._measure(entries, time.perf_counter() - started)
            fillers = [entry for entry in entries if entry.filler]
            for entry in fillers:
                llama_cpp.llama_memory_seq_rm(self._memory, entry.seq_id, entry.position, -1)
            if rc != 0:
                raise RuntimeError(f"llama_decode failed with status {rc}")
            if self.observer is not None:
                self.observer(len(entries) - len(fillers), self._batch.n_tokens - len(fillers))
            for entry in entries:
                if entry.filler:
                    continue
                generation = by_id[entry.seq_id]
                if len(entry.tokens) >= MIN_CHUNK and generation.exact == entry.position:
                    generation.exact += len(entry.tokens)
                generation.position += len(entry.tokens)
                generation.evaluated += entry.tokens
                if generation.next_token is None:
                    generation.prompt_left = generation.prompt_left[len(entry.tokens) :]
            for seq_id, index in samples:
                self._sample(by_id[seq_id], index)

    def _measure(self, entries: list[BatchEntry], seconds: float) -> None:
        """Fold one call's time into :attr:`costs`: prompt chunks per token, the generating call whole."""
        if all(len(entry.tokens) >= MIN_CHUNK for entry in entries):
            old, total = self.costs.per_prompt_token, seconds / sum(len(entry.tokens) for entry in entries)
            self.costs = StepCosts(_smooth(old, total), self.costs.generating_call)
        elif all(len(entry.tokens) == 1 for entry in entries):
            self.costs = StepCosts(self.costs.per_prompt_token, _smooth(self.costs.generating_call, seconds))

    def _free_positions(self, running: dict[int, Generation]) -> dict[int, int]:
        """Where each sequence that is not generating could take a filler token: the end of its cache stream."""
        positions: dict[int, int] = {}
        for seq_id in range(self.n_seq):
            generation = running.get(seq_id)
            if generation is None:
                kept = self._kept.get(seq_id)
                position = 0 if kept is None else len(kept.tokens)
            elif generation.next_token is None:
                position = generation.position
            else:
                continue
            if position < self.n_ctx_seq:
                positions[seq_id] = position
        return positions

    def _fill(self, entries: list[BatchEntry]) -> list[tuple[int, int]]:
        """Write the entries into the native batch; the (seq id, batch index) pairs whose logits are wanted."""
        batch = self._batch
        token, pos, n_seq_id, seq_ids, logits = batch.token, batch.pos, batch.n_seq_id, batch.seq_id, batch.logits
        samples: list[tuple[int, int]] = []
        index = 0
        for entry in entries:
            position = entry.position
            for value in entry.tokens:
                token[index] = value
                pos[index] = position
                n_seq_id[index] = 1
                seq_ids[index][0] = entry.seq_id
                logits[index] = 0
                position += 1
                index += 1
            if entry.sample:
                logits[index - 1] = 1
                samples.append((entry.seq_id, index - 1))
        batch.n_tokens = index
        return samples

    def _sample(self, generation: Generation, index: int) -> None:
        quick = self._quick
        step = StepLogits(self._ctx, index, self.n_vocab)
        if generation.sampler is None:
            raise RuntimeError(f"seq {generation.seq_id} has no sampler")
        try:
            token = generation.sampler.choose(step)
        except Exception as exc:  # this sequence's own sampler (a grammar with no way on): end it, not the batch
            log.warning("seq %d: sampling failed: %s", generation.seq_id, exc)
            generation.fail(exc)
            self._release(generation)
            return
        if quick.is_eog(self._vocab, token) or generation.cancel.is_set():
            self._release(generation)
            return
        size = quick.token_to_piece(self._vocab, token, self._piece, len(self._piece), 0, False)
        logprobs = None if generation.logprobs is None else self._logprobs(step, token, generation.logprobs)
        generation.emit(token, self._piece.raw[: max(size, 0)], logprobs)
        if generation.produced >= generation.max_tokens or generation.position >= self.n_ctx_seq:
            self._release(generation)
        else:
            generation.next_token = token

    def _logprobs(self, step: StepLogits, token: int, top: int) -> StepLogprobs:
        if self._scratch is None:
            self._scratch = np.empty(self.n_vocab, dtype=np.float32)
        return step_logprobs(step.row(), token, top, self._scratch)

    def _release(self, generation: Generation) -> None:
        """Drop a sequence: free its KV cells and sampler, end its token stream."""
        if generation in self._running:
            self._running.remove(generation)
        if self.reuse_prefixes and not generation.failed:
            self._kept[generation.seq_id] = KeptCells(generation.evaluated, generation.exact)
        else:
            self._clear(generation.seq_id)
        if generation.sampler is not None:
            generation.sampler.close()
            generation.sampler = None
        generation.finish()

    def _reuse_or_clear(self, generation: Generation, sources: Sequence[Generation]) -> None:
        """Start the sequence after the longest exact prefix a slot holds (prompt cache), or from scratch.

        The prefix comes from the sequence's own slot, or from another slot's cells (an idle slot's kept cells, or a
        running sequence's evaluated prompt), copied whole into this slot and cut after the prefix."""
        kept = self._kept.pop(generation.seq_id, None)
        prompt = generation.prompt_left
        # At least MIN_CHUNK prompt tokens are evaluated again: the last one's logits give the first token, and a
        # lone token would take the single-row path.
        limit = len(prompt) - MIN_CHUNK
        if not self.reuse_prefixes or limit <= 0:
            self._clear(generation.seq_id)
            return
        own = 0 if kept is None else shared_prefix(kept.reusable, prompt, limit)
        candidates = [(seq_id, cells.reusable) for seq_id, cells in self._kept.items()]
        candidates += [(other.seq_id, other.evaluated[: other.exact]) for other in sources]
        source, common = prefix_source(
            generation.seq_id, own, [(seq_id, shared_prefix(tokens, prompt, limit)) for seq_id, tokens in candidates]
        )
        if common and self._take_prefix(generation.seq_id, source, common):
            generation.position = generation.exact = generation.cached = common
            generation.evaluated = list(prompt[:common])
            generation.prompt_left = prompt[common:]
            log.debug("seq %d reuses %d cached prompt tokens of seq %d", generation.seq_id, common, source)
            return
        self._clear(generation.seq_id)

    def _take_prefix(self, seq_id: int, source: int, length: int) -> bool:
        """Leave in ``seq_id``'s cache the first ``length`` cells of ``source``'s; False when they are not all there."""
        import llama_cpp

        memory = self._memory
        if source != seq_id:
            # Across KV streams llama.cpp copies a whole stream (at the next decode), then the copy is cut.
            llama_cpp.llama_memory_seq_rm(memory, seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(memory, source, seq_id, -1, -1)
        if not llama_cpp.llama_memory_seq_rm(memory, seq_id, length, -1):
            return False
        # Sliding-window layers keep only the last window of cells: the prefix's last window must still be there.
        return self._window_holds(seq_id, length)

    def _window_holds(self, seq_id: int, length: int) -> bool:
        """Whether ``seq_id``'s sliding-window cells still hold the last window before position ``length``.

        ``llama_memory_seq_pos_min`` reports the sliding-window cache, and -1 when the sequence has no cell there:
        after a long sequence (more positions than those cells) the first positions are gone, and once the cells
        after a short prefix are removed nothing of it is left. -1 is then no window at all, not position 0."""
        import llama_cpp

        if self.n_swa == 0:
            return True
        lowest = llama_cpp.llama_memory_seq_pos_min(self._memory, seq_id)
        return bool(0 <= lowest <= max(0, length - self.n_swa))

    def _clear(self, seq_id: int) -> None:
        import llama_cpp

        self._kept.pop(seq_id, None)
        llama_cpp.llama_memory_seq_rm(self._memory, seq_id, -1, -1)


def _smooth(average: float, value: float) -> float:
    return value if average <= 0.0 else average + COST_SMOOTHING * (value - average)


def prefix_source(seq_id: int, own: int, others: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """Where a new sequence on ``seq_id`` takes its cached prefix from, and how long it is (0: none).

    ``own`` is the prefix its own slot holds (kept in place); ``others`` pairs another slot with the prefix it holds,
    which costs a copy of that slot's whole KV stream. A prefix counts from :data:`MIN_REUSED_PREFIX` tokens on, and
    another slot's only when it is that much longer than the own slot's."""
    own = own if own >= MIN_REUSED_PREFIX else 0
    source, common = seq_id, own
    for other, length in others:
        if length > common and length >= own + MIN_REUSED_PREFIX:
            source, common = other, length
    return source, common


def shared_prefix(first: Sequence[int], second: Sequence[int], limit: int) -> int:
    """How many leading tokens the two sequences share, at most ``limit``."""
    count = 0
    for a, b in zip(first, second, strict=False):
        if a != b or count >= limit:
            break
        count += 1
    return count
