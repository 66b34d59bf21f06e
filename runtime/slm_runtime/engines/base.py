"""The engine interface every inference backend implements, and the value types that cross it.

Engines compute on threads of their own: :meth:`Engine.start` hands a generation to the engine and returns at once;
the engine delivers the tokens to a :data:`TokenSink` on its computing thread (llama.cpp's decoder thread decodes
every slot together in one batch; onnxruntime-genai and the fake engine run one thread per slot). This is the
only delivery path: the server's thread->loop bridge (:mod:`slm_runtime.bridge`) is such a sink, and
:meth:`Engine.stream`, for callers that want a blocking iterator (benchmarks, engine tests, the warm-up), is built
on ``start`` too. Every other call (tokenize, validate, embed, ...) blocks its caller.

A *slot* is a sequence index 0..parallel-1 that owns its own KV cache; the scheduler hands out each slot to one
generation at a time. Cancellation is cooperative: the caller sets the ``cancel`` event and the engine stops
before producing its next token.

Implementations: :mod:`slm_runtime.engines.llama_cpp`, :mod:`slm_runtime.engines.onnx_genai` and, for tests,
:mod:`slm_runtime.engines.fake`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = [
    "Embeddings",
    "Engine",
    "GeneratedToken",
    "ModelInfo",
    "SamplingParams",
    "StepObserver",
    "TokenSink",
    "deliver",
]


@dataclass(frozen=True)
class SamplingParams:
    """Resolved sampling options for one generation (request options merged over server defaults)."""

    max_tokens: int
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.9
    min_p: float = 0.0
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    json_schema: dict[str, Any] | None = None
    """Constrain output to this JSON schema (``{}`` means any JSON value) when the engine supports it."""
    logprobs: int | None = None
    """None: no log-probabilities. 0: the chosen token's. k > 0: also the k most likely tokens at each step."""


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token and the text it completes (may be empty while a UTF-8 sequence is incomplete).

    ``logprob`` and ``top_logprobs`` ((token id, log-probability), most likely first) are filled when the
    generation's ``SamplingParams.logprobs`` asks; they are the model's distribution before sampling
    (log-softmax of the raw logits), as OpenAI and llama-server report them."""

    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: tuple[tuple[int, float], ...] = ()
    cached_prompt_tokens: int = 0
    """On a generation's first token: how many of its prompt tokens the engine took from its prompt cache instead of
    reading them (0 on every later token, and from engines without a prompt cache)."""


@dataclass(frozen=True)
class Embeddings:
    """Pooled, unnormalized embedding vectors and the tokens read to make them."""

    vectors: list[list[float]]
    token_counts: list[int]


@dataclass(frozen=True)
class ModelInfo:
    """What an engine knows about its loaded model; reported by /api/show, /api/tags and metrics."""

    format: str
    engine: str
    family: str = ""
    parameter_size: str = ""
    quantization: str = ""
    context_length: int = 4096
    size_bytes: int = 0
    vocab_size: int = 0
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    supports_embeddings: bool = False
    supports_json_schema: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


StepObserver = Callable[[int, int], None]
"""Called after each decode step with (sequences in the step, tokens in the step)."""

ArrivalCount = Callable[[], int]
"""How many generations the server has admitted and not started yet (see :meth:`Engine.expect_arrivals`)."""

TokenSink = Callable[[GeneratedToken | BaseException | None], None]
"""Receives one generation on the engine's thread: its tokens, then at most one error, then exactly one None
once the generation has stopped and its slot may take the next one."""


def deliver(tokens: Iterator[GeneratedToken], sink: TokenSink) -> None:
    """Feed ``sink`` from ``tokens`` on the calling thread, as the contract says: the tokens, the error that ends
    them if one does, then None (once ``tokens`` has finished, its own clean-up included)."""
    try:
        for token in tokens:
            sink(token)
    except BaseException as exc:
        sink(exc)
    finally:
        sink(None)


class Engine(Protocol):
    """A loaded model. Engines subclass this protocol explicitly, so that mypy checks every member is there."""

    @property
    def info(self) -> ModelInfo: ...

    def observe_steps(self, observer: StepObserver | None) -> None:
        """Call ``observer(sequences, tokens)`` after every decode step (batch-size metrics); None stops it."""
        ...

    def after_steps(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` on the computing thread between decode steps, or never when the engine gains nothing.

        The server passes :meth:`slm_runtime.mailbox.Mailbox.wait_delivered`: the event loop then streams a step's
        tokens out while the compute threads are idle instead of preempting one of them mid-step.
        """
        ...

    def expect_arrivals(self, count: ArrivalCount | None) -> None:
        """Let the engine ask how many generations are on their way to :meth:`start` (admitted by the server, not
        started yet; None: never ask). An engine that batches may wait a moment for them when it is idle, so that a
        burst of requests is read together; one that does not ignores it."""
        ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the BOS token the model expects at the start."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token adds to the output (a control token: its markup), as log-probabilities report it.

        Engines override this with their vocabulary's exact pieces (a byte-fallback token is one byte of a UTF-8
        character); this default, for wrappers that only delegate the rest, decodes the token alone.
        """
        return self.detokenize([token_id]).encode("utf-8")

    def validate(self, params: SamplingParams) -> None:
        """Raise InvalidRequestError for options this engine cannot honour; runs before a request is admitted."""
        ...

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        """Begin generating after ``prompt`` on ``slot``, until end of generation, ``params.max_tokens`` or ``cancel``.

        Returns once the generation is handed over; ``sink`` gets its tokens (end-of-generation tokens are not
        delivered) and its end on the engine's thread. Errors found before the hand-over (an empty or too long
        prompt) raise here, and the sink then gets nothing. Only one generation per slot runs at a time.
        """
        ...

    def stream(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GeneratedToken]:
        """:meth:`start` as a blocking iterator. Closing it early sets ``cancel`` and waits until the slot is free."""
        items: queue.SimpleQueue[GeneratedToken | BaseException | None] = queue.SimpleQueue()
        self.start(slot, prompt, params, cancel, items.put)
        ended = False
        try:
            while (item := items.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
            ended = True
        finally:
            if not ended:
                cancel.set()
                while items.get() is not None:
                    pass

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Mean-pooled embeddings; raises EmbeddingsUnsupportedError when the engine has none."""
        ...

    def close(self) -> None: ...
