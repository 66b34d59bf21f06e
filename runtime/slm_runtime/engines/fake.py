"""A deterministic engine without a model: the fast test layer serves it through the real app in milliseconds.

It implements the same :class:`~slm_runtime.engines.base.Engine` protocol as the real engines and delivers through
the same path (``start`` and a sink, on one persistent thread per slot), so in-process tests exercise the server
exactly as production does. :func:`~slm_runtime.engines.load_engine` never picks it: tests pass it to
``create_app(settings, engine_loader=...)``.

- Tokens are bytes: ``tokenize`` gives :data:`BOS` then one id per UTF-8 byte (``byte + 3``); ``detokenize``
  inverts it. ``bos_token`` is only the text the model info reports (what templates write as BOS).
- Every generation produces the characters of ``reply`` (ASCII), one token each, whatever the prompt and sampling
  options (which are recorded in :attr:`FakeEngine.started` for tests to check), then ends as at an
  end-of-generation token; ``max_tokens`` and ``cancel`` stop it earlier.
- ``token_delay`` seconds pass before each token (configurable latency); while ``gate`` is clear, generations
  wait before their next token, so a test can hold slots busy and release them.
- ``fail_after=n`` makes a generation fail after ``n`` tokens (an error midway through a stream).
- Log-probabilities (when ``SamplingParams.logprobs`` asks) follow one fixed distribution at every step: the
  chosen token has probability 1/2 and the token ``i`` ids after it, counting within the 256 byte tokens and
  wrapping, 2^-(i+1) (:func:`fake_logprobs`). ``token_bytes`` of a byte token is its byte.
- Embeddings are 8 counts of the text's bytes by their value modulo 8 (when ``embeddings`` is on).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from slm_runtime.engines.base import (
    ArrivalCount,
    Embeddings,
    Engine,
    GeneratedToken,
    ModelInfo,
    SamplingParams,
    StepObserver,
    TokenSink,
    deliver,
)
from slm_runtime.errors import EmbeddingsUnsupportedError
from slm_runtime.workers import SlotThreads

__all__ = ["BOS", "EMBEDDING_SIZE", "FakeEngine", "FakeEngineError", "StartedGeneration", "fake_logprobs"]

BOS = 1
_FIRST_BYTE = 3
EMBEDDING_SIZE = 8
_GATE_POLL_SECONDS = 0.005


def fake_logprobs(token: int, top: int) -> tuple[float, tuple[tuple[int, float], ...]]:
    """The fake engine's log-probability of ``token`` and its ``top`` most likely tokens (see the module doc)."""
    byte = token - _FIRST_BYTE
    ranked = tuple(((byte + i) % 256 + _FIRST_BYTE, -(i + 1) * math.log(2)) for i in range(min(max(top, 0), 256)))
    return -math.log(2), ranked


class FakeEngineError(RuntimeError):
    """The failure that ``fail_after`` injects."""


@dataclass(frozen=True)
class StartedGeneration:
    """What one ``start`` call asked for."""

    slot: int
    prompt: tuple[int, ...]
    params: SamplingParams


class FakeEngine(Engine):
    """Deterministic tokens, configurable latency, one thread per slot; see the module docstring."""

    def __init__(
        self,
        parallel: int = 1,
        *,
        reply: str = "Hello from the fake engine.",
        token_delay: float = 0.0,
        context_length: int = 512,
        chat_template: str | None = None,
        bos_token: str = "",
        embeddings: bool = True,
        fail_after: int | None = None,
    ) -> None:
        if not reply.isascii():
            raise ValueError("the fake engine's reply must be ASCII: one character is one token")
        self.reply = reply
        self.token_delay = token_delay
        self.fail_after = fail_after
        self.gate = threading.Event()
        """Generations run while it is set (it is, at first); clear it to hold them before their next token."""
        self.gate.set()
        self.started: list[StartedGeneration] = []
        self._info = ModelInfo(
            format="gguf",
            engine="fake",
            family="fake",
            parameter_size="0",
            quantization="none",
            context_length=context_length,
            vocab_size=256 + _FIRST_BYTE,
            chat_template=chat_template,
            bos_token=bos_token,
            supports_embeddings=embeddings,
        )
        self._threads = SlotThreads(parallel, name="slm-fake")
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._observer: StepObserver | None = None
        self._after_step: Callable[[], None] | None = None

    @property
    def info(self) -> ModelInfo:
        return self._info

    def observe_steps(self, observer: StepObserver | None) -> None:
        self._observer = observer

    def after_steps(self, callback: Callable[[], None] | None) -> None:
        self._after_step = callback

    def expect_arrivals(self, count: ArrivalCount | None) -> None:
        """Never asked: the fake engine's steps cost nothing to share."""

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return ([BOS] if add_special else []) + [byte + _FIRST_BYTE for byte in text.encode("utf-8")]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return bytes(t - _FIRST_BYTE for t in tokens if t >= _FIRST_BYTE).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        return bytes([token_id - _FIRST_BYTE]) if _FIRST_BYTE <= token_id < _FIRST_BYTE + 256 else b""

    def validate(self, params: SamplingParams) -> None:
        """The fake honours every option (it ignores them all but ``logprobs``)."""

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        with self._lock:
            if slot in self._busy:
                raise RuntimeError(f"slot {slot} is already generating")
            self._busy.add(slot)
            self.started.append(StartedGeneration(slot, tuple(prompt), params))
        tokens = self._generate(slot, len(prompt), params, cancel)
        self._threads.submit(slot, lambda: deliver(tokens, sink))

    def _generate(
        self, slot: int, prompt_tokens: int, params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GeneratedToken]:
        try:
            self._step(1, prompt_tokens)
            for index, char in enumerate(self.reply[: params.max_tokens]):
                if self.fail_after is not None and index >= self.fail_after:
                    raise FakeEngineError(f"the fake engine failed after {index} tokens")
                if not self._wait(cancel):
                    return
                token = ord(char) + _FIRST_BYTE
                if params.logprobs is None:
                    yield GeneratedToken(token, char)
                else:
                    logprob, top = fake_logprobs(token, params.logprobs)
                    yield GeneratedToken(token, char, logprob=logprob, top_logprobs=top)
                self._step(1, 1)
        finally:
            with self._lock:
                self._busy.discard(slot)

    def _wait(self, cancel: threading.Event) -> bool:
        """Sleep ``token_delay`` and wait for the gate; False when cancelled meanwhile."""
        if self.token_delay > 0 and cancel.wait(self.token_delay):
            return False
        while not self.gate.wait(_GATE_POLL_SECONDS):
            if cancel.is_set():
                return False
        return not cancel.is_set()

    def _step(self, sequences: int, tokens: int) -> None:
        if self._observer is not None:
            self._observer(sequences, tokens)
        if self._after_step is not None:
            self._after_step()

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not self._info.supports_embeddings:
            raise EmbeddingsUnsupportedError("the fake engine was made without embeddings")
        vectors: list[list[float]] = []
        for text in texts:
            counts = [0.0] * EMBEDDING_SIZE
            for byte in text.encode("utf-8"):
                counts[byte % EMBEDDING_SIZE] += 1.0
            vectors.append(counts)
        return Embeddings(vectors=vectors, token_counts=[len(self.tokenize(text)) for text in texts])

    @property
    def busy_slots(self) -> set[int]:
        """Slots generating right now."""
        with self._lock:
            return set(self._busy)

    def close(self) -> None:
        self._threads.shutdown()
