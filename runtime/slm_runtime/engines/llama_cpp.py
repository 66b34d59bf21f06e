"""The llama.cpp engine (llama-cpp-python) for GGUF models.

One model and one context for all slots: the ``parallel`` sequences are decoded together in one batch per step
(continuous batching, see :mod:`slm_runtime.engines.llama_batch`), each with ``context_length`` tokens of KV cache
of its own; plus one embedding context created on first use.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from slm_runtime.engines import cpu_kernels
from slm_runtime.engines.base import (
    ArrivalCount,
    Embeddings,
    Engine,
    ModelInfo,
    SamplingParams,
    StepObserver,
    TokenSink,
)
from slm_runtime.engines.constrained import GrammarSampler
from slm_runtime.engines.draw import TokenDraw, fast_draw_applies
from slm_runtime.engines.first_bytes import FirstByteIndex
from slm_runtime.engines.greedy import GreedyPicker, fast_greedy_applies
from slm_runtime.engines.llama_batch import BatchDecoder, DecodeTarget, Generation
from slm_runtime.engines.llama_native import quick_calls
from slm_runtime.engines.samplers import ChainSampler, TokenSampler, grammar_sampler, sampler_chain
from slm_runtime.errors import ContextLengthExceededError, EmbeddingsUnsupportedError, InvalidRequestError
from slm_runtime.settings import RuntimeSettings

__all__ = ["DEFAULT_CONTEXT", "LlamaCppEngine", "context_params", "make_sampler", "quantization_name"]

log = logging.getLogger(__name__)

DEFAULT_CONTEXT = 4096

# llama.cpp's LLAMA_FTYPE_* values (general.file_type) and the names Ollama reports.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    19: "IQ2_XXS",
    20: "IQ2_XS",
    24: "IQ1_S",
    25: "IQ4_NL",
    26: "IQ3_S",
    27: "IQ3_M",
    28: "IQ2_S",
    29: "IQ2_M",
    30: "IQ4_XS",
    31: "IQ1_M",
    32: "BF16",
}


def quantization_name(file_type: str | int | None) -> str:
    """``15`` -> ``Q4_K_M``; unknown values come back as ``ftype-N``."""
    if file_type is None or file_type == "":
        return "unknown"
    try:
        number = int(file_type)
    except ValueError:
        return str(file_type)
    return _FILE_TYPES.get(number, f"ftype-{number}")


class LlamaCppEngine(Engine):
    """GGUF models through llama-cpp-python, all slots decoded together. Construct with :meth:`load`."""

    def __init__(
        self, settings: RuntimeSettings, model: Any, context: Any, info: ModelInfo, decoder: BatchDecoder
    ) -> None:
        self._settings = settings
        self._model = model
        self._context = context
        self._info = info
        self._decoder = decoder
        self._embedder: Any | None = None
        self._embed_lock = threading.Lock()
        self._pieces: dict[int, bytes] = {}
        self._first_bytes: FirstByteIndex | None = None
        self._index_lock = threading.Lock()

    @classmethod
    def load(cls, settings: RuntimeSettings) -> LlamaCppEngine:
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp._logger import set_verbose

        path = settings.model.model
        if not path.is_file():
            raise FileNotFoundError(f"model file {path} does not exist (--model)")
        set_verbose(False)
        model_params = llama_cpp.llama_model_default_params()
        model_params.n_gpu_layers = 0x7FFFFFFF if settings.engine.gpu_layers < 0 else settings.engine.gpu_layers
        model_params.use_mmap = True
        # Batch invariance: no runtime weight repacking, whose CPU kernels compute a token's row differently
        # (gemv alone, 4-row gemm in a batch), and no tiled K-quant kernel in generating calls that reach its floor
        # (tiled_gate), so that a sequence's output does not depend on its neighbours.
        model_params.use_extra_bufts = not settings.engine.batch_invariant
        model = _internals.LlamaModel(path_model=str(path), params=model_params, verbose=False)
        try:
            gate = tiled_gate(settings, model)
            context = _internals.LlamaContext(model=model, params=context_params(settings, model), verbose=False)
        except BaseException:
            model.close()
            raise
        target = DecodeTarget(
            ctx=context.ctx,
            vocab=model.vocab,
            n_seq=int(llama_cpp.llama_n_seq_max(context.ctx)),
            n_batch=int(context.params.n_batch),
            n_ctx_seq=int(llama_cpp.llama_n_ctx_seq(context.ctx)),
            n_vocab=int(model.n_vocab()),
            n_swa=int(llama_cpp.llama_model_n_swa(model.model)),
            tiled_gate=gate,
        )
        decoder = BatchDecoder(target, reuse_prefixes=settings.engine.prompt_cache)
        info = cls._describe(model, context, path)
        log.debug("llama.cpp: %d sequence(s) of %d tokens", decoder.n_seq, info.context_length)
        return cls(settings, model, context, info, decoder)

    @staticmethod
    def _describe(model: Any, context: Any, path: Path) -> ModelInfo:
        import llama_cpp

        meta: dict[str, str] = model.metadata()
        arch = meta.get("general.architecture", "")
        bos_id = int(model.token_bos())
        eos_id = int(model.token_eos())
        bos = model.token_get_text(bos_id) if bos_id >= 0 else ""
        eos = model.token_get_text(eos_id) if eos_id >= 0 else ""
        params = int(model.n_params())
        size_label = meta.get("general.size_label") or _human_count(params)
        return ModelInfo(
            format="gguf",
            engine="llama-cpp",
            family=arch,
            parameter_size=size_label,
            quantization=quantization_name(meta.get("general.file_type")),
            context_length=int(llama_cpp.llama_n_ctx_seq(context.ctx)),
            size_bytes=path.stat().st_size,
            vocab_size=int(model.n_vocab()),
            chat_template=meta.get("tokenizer.chat_template") or None,
            bos_token=bos if meta.get("tokenizer.ggml.add_bos_token", "true") != "false" else "",
            eos_token=eos,
            supports_embeddings=True,
            supports_json_schema=True,
            extra={
                "general.architecture": arch,
                "general.parameter_count": params,
                f"{arch}.context_length": int(model.n_ctx_train()),
                f"{arch}.embedding_length": int(model.n_embd()),
                "general.name": meta.get("general.name", ""),
                "general.license": meta.get("general.license", ""),
            },
        )

    # --- Engine -----------------------------------------------------------------------------------------

    @property
    def info(self) -> ModelInfo:
        return self._info

    def observe_steps(self, observer: StepObserver | None) -> None:
        self._decoder.observer = observer

    def after_steps(self, callback: Callable[[], None] | None) -> None:
        """Run ``callback`` on the decoder thread between steps (see Mailbox.wait_delivered)."""
        self._decoder.after_step = callback

    def wait_settled(self, timeout: float) -> bool:
        """Wait until the decoder is idle with its kept cells re-read (prompt cache); False at ``timeout``."""
        return self._decoder.wait_settled(timeout)

    def expect_arrivals(self, count: ArrivalCount | None) -> None:
        """An idle decoder waits briefly for a burst of admitted requests (see BatchDecoder._gather)."""
        self._decoder.arrivals = count

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        tokens: list[int] = self._model.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        data: bytes = self._model.detokenize(list(tokens))
        return data.decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The token's piece with control tokens as their markup (cached: the event loop asks per reported token,
        and the binding used keeps the GIL, see :mod:`slm_runtime.engines.llama_native`)."""
        piece = self._pieces.get(token_id)
        if piece is None:
            if not 0 <= token_id < self._info.vocab_size:
                raise ValueError(f"token id {token_id} is outside the vocabulary of {self._info.vocab_size}")
            buffer = ctypes.create_string_buffer(256)
            size = quick_calls().token_to_piece(self._model.vocab, token_id, buffer, len(buffer), 0, True)
            piece = self._pieces[token_id] = buffer.raw[: max(size, 0)]
        return piece

    def validate(self, params: SamplingParams) -> None:
        if params.logprobs is not None and params.logprobs < 0:
            raise InvalidRequestError("logprobs must be 0 or more", param="logprobs")
        if params.json_schema is not None:
            self._grammar(params.json_schema)
            self._first_byte_index()  # built once, here on a worker thread rather than in start

    def _first_byte_index(self) -> FirstByteIndex:
        with self._index_lock:
            if self._first_bytes is None:
                self._first_bytes = FirstByteIndex.of_vocab(self._model.vocab, self._info.vocab_size)
            return self._first_bytes

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        """Hand the generation to the decoder thread, which delivers its tokens to ``sink`` (see Engine.start)."""
        if params.max_tokens <= 0 or cancel.is_set():
            sink(None)
            return
        if not prompt:
            raise InvalidRequestError("the prompt is empty: send at least one token", param="prompt")
        if len(prompt) >= self._info.context_length:
            raise ContextLengthExceededError(
                f"the prompt is {len(prompt)} tokens; each of the {self._decoder.n_seq} parallel sequences has "
                f"{self._info.context_length} tokens of context",
                param="prompt",
            )
        grammar = self._grammar(params.json_schema) if params.json_schema is not None else None
        # llama.cpp takes 32-bit seeds: keep request values in range instead of overflowing ctypes.
        seed = (params.seed if params.seed is not None else random.randrange(2**31)) & 0xFFFFFFFF
        last_n = params.repeat_last_n if params.repeat_last_n >= 0 else self._info.context_length
        top_k = min(max(params.top_k, 0), self._info.vocab_size or 2**31 - 1)
        params = replace(params, repeat_last_n=min(last_n, self._info.context_length), top_k=top_k)
        index = self._first_byte_index() if grammar is not None else None
        sampler = make_sampler(self._model.vocab, self._info.vocab_size, params, seed, grammar, index)
        generation = Generation(slot, prompt, params.max_tokens, sampler, cancel, sink, params.logprobs)
        try:
            self._decoder.submit(generation)
        except BaseException:
            sampler.close()
            raise

    def _grammar(self, schema: dict[str, Any]) -> Any:
        from llama_cpp.llama_grammar import JSON_GBNF, LlamaGrammar, json_schema_to_gbnf

        if not schema:
            return LlamaGrammar.from_string(JSON_GBNF, verbose=False)
        try:
            converted = json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # the converter raises assorted errors for schemas it cannot express
            raise InvalidRequestError(
                f"cannot constrain output to this JSON schema ({type(exc).__name__}: {exc})", param="format"
            ) from exc
        grammar = LlamaGrammar.from_string(strict_json_strings(converted), verbose=False)
        # llama.cpp crashes the process on a grammar it cannot parse; an empty rule (from e.g. {"enum": []})
        # is the case the converter lets through, so refuse it here.
        for line in str(grammar._grammar).splitlines():
            name, sep, body = line.partition("::=")
            if sep and not body.strip():
                raise InvalidRequestError(
                    f"this JSON schema admits no value (rule {name.strip()!r} is empty)", param="format"
                )
        return grammar

    def embed(self, texts: Sequence[str]) -> Embeddings:
        if not self._settings.engine.embeddings:
            raise EmbeddingsUnsupportedError("embeddings are turned off (--embeddings false)")
        with self._embed_lock:
            # On a thread that ends with the call: its OpenMP team would otherwise slow generation (cpu_kernels).
            return cpu_kernels.on_own_thread(lambda: self._embed(texts))

    def _embed(self, texts: Sequence[str]) -> Embeddings:
        embedder = self._embedder or self._load_embedder()
        vectors: list[list[float]] = []
        counts: list[int] = []
        for text in texts:
            vector, count = embedder.embed(text, normalize=False, truncate=True, return_count=True)
            vectors.append([float(x) for x in vector])
            counts.append(int(count))
        return Embeddings(vectors=vectors, token_counts=counts)

    def _load_embedder(self) -> Any:
        import llama_cpp

        n_ctx = self._info.context_length
        threads = engine_threads(self._settings)
        self._embedder = llama_cpp.Llama(
            model_path=str(self._settings.model.model),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=self._settings.engine.gpu_layers,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            use_mmap=True,
            verbose=False,
        )
        return self._embedder

    def close(self) -> None:
        self._decoder.close()
        self._context.close()
        self._model.close()
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None


def make_sampler(
    vocab: Any, n_vocab: int, params: SamplingParams, seed: int, grammar: Any | None, index: FirstByteIndex | None
) -> TokenSampler:
    """How one generation chooses its tokens: the greedy pick or the numpy draw where they are exact (temperature 0
    or above it, no grammar), the grammar sampler under a JSON schema (``index``: the vocabulary's first-byte index),
    llama.cpp's chain otherwise."""
    if fast_greedy_applies(params, constrained=grammar is not None):
        return GreedyPicker(params.repeat_penalty, params.repeat_last_n)
    if fast_draw_applies(params, n_vocab, constrained=grammar is not None):
        return TokenDraw(params, seed, n_vocab)
    chain = sampler_chain(vocab, n_vocab, params, seed, None)
    if grammar is None:
        return ChainSampler(chain)
    if index is None:
        raise ValueError("a grammar needs the vocabulary's first-byte index")
    return GrammarSampler(params, chain, grammar_sampler(vocab, grammar), index, n_vocab)


JSON_STRING_CHAR = (
    r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F] [0-9a-fA-F])'
)
"""A JSON string's character (RFC 8259): no raw control character, which a JSON parser refuses."""


def strict_json_strings(gbnf: str) -> str:
    """The grammar llama-cpp-python's JSON-schema converter made, with its string character rule as JSON has it: the
    converter's ``char ::= [^"\\] | ...`` lets a raw newline or tab into a string (a model at temperature 1.5 wrote
    one into a tool call's argument), which then does not parse."""
    return "\n".join(JSON_STRING_CHAR if line.startswith("char ::= ") else line for line in gbnf.splitlines())


def engine_threads(settings: RuntimeSettings) -> int:
    return settings.engine.threads or os.cpu_count() or 1


def tiled_gate(settings: RuntimeSettings, model: Any) -> cpu_kernels.TiledGate | None:
    """The gate that keeps generating calls off ggml's tiled kernel, where they can reach its floor (cpu_kernels)."""
    if not cpu_kernels.needs_gate(settings.engine.batch_invariant, settings.server.parallel):
        return None
    weights = cpu_kernels.find_kquant_weights(model, engine_threads(settings))
    if weights is None:
        log.warning(
            "ggml's tensors are not laid out as expected: the tiled kernel is off for every call if this engine is "
            "the process's first, otherwise greedy output may vary with load (%s)",
            cpu_kernels.TILED_SWITCH,
        )
        return None
    log.debug("llama.cpp: %d K-quant weights kept off the tiled kernel in generating calls", len(weights))
    return cpu_kernels.TiledGate(weights) if weights else None


def context_params(settings: RuntimeSettings, model: Any) -> Any:
    """One context for every slot: ``parallel`` sequences of ``context_length`` tokens, each its own KV stream."""
    import llama_cpp

    parallel = settings.server.parallel
    train = int(model.n_ctx_train())
    per_sequence = settings.model.context_length or (min(DEFAULT_CONTEXT, train) if train > 0 else DEFAULT_CONTEXT)
    threads = engine_threads(settings)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = per_sequence * parallel
    params.n_batch = min(settings.engine.batch_size, per_sequence * parallel)
    params.n_ubatch = params.n_batch
    params.n_seq_max = parallel
    params.n_threads = threads
    params.n_threads_batch = threads
    params.kv_unified = False
    # Sliding-window layers keep only their window (plus a batch): the decoder reuses a cached prefix only while its
    # last window is still there (DecodeTarget.n_swa), as llama-server does without context checkpoints.
    params.swa_full = False
    # Flash attention's CPU kernel, too, rounds a sequence's attention differently beside other sequences.
    invariant = settings.engine.batch_invariant
    params.flash_attn_type = (
        llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED if invariant else llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO
    )
    return params


def _human_count(count: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)
