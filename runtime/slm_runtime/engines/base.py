"""The engine interface every inference backend implements, and the value types that cross it.

Engines are synchronous and blocking: the HTTP layer calls them from worker threads, one generation per *slot*
at a time (a slot owns its own KV cache; the llama.cpp engine decodes all slots together in one batch).
Cancellation is cooperative: the caller sets the ``cancel`` event and the engine stops before producing its next
token.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "Embeddings",
    "Engine",
    "GeneratedToken",
    "ModelInfo",
    "SamplingParams",
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


@dataclass(frozen=True)
class GeneratedToken:
    """One generated token and the text it completes (may be empty while a UTF-8 sequence is incomplete)."""

    token_id: int
    text: str


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
    train_context_length: int = 0
    size_bytes: int = 0
    vocab_size: int = 0
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    supports_embeddings: bool = False
    supports_json_schema: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Engine(Protocol):
    """A loaded model. Implementations: LlamaCppEngine (GGUF) and OnnxGenaiEngine (onnxruntime-genai)."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def slots(self) -> int:
        """How many generations may run at once (each on its own slot index 0..slots-1)."""
        ...

    def observe_steps(self, observer: Callable[[int, int], None] | None) -> None:
        """Call ``observer(sequences, tokens)`` after every decode step (batch-size metrics); None stops it."""
        ...

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        """Token ids of ``text``; ``add_special`` adds the BOS token the model expects at the start."""
        ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def validate(self, params: SamplingParams) -> None:
        """Raise InvalidRequestError for options this engine cannot honour; runs before a request is admitted."""
        ...

    def stream(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GeneratedToken]:
        """Generate after ``prompt`` until end of generation, ``params.max_tokens`` or ``cancel`` is set.

        End-of-generation tokens are not yielded. Only one stream per slot runs at a time.
        """
        ...

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Mean-pooled embeddings; raises EmbeddingsUnsupportedError when the engine has none."""
        ...

    def close(self) -> None: ...
