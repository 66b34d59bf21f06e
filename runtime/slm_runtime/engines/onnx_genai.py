"""The onnxruntime-genai engine for ONNX model folders (``genai_config.json`` plus weights and tokenizer).

The model (one ONNX Runtime session) is shared; every generation gets its own ``Generator``, so slots run
concurrently, each decoding its own sequence on its slot's own persistent thread (:mod:`slm_runtime.workers`),
which delivers the tokens to the generation's sink. No batching across slots: onnxruntime-genai's request-level
``og.Engine`` is not used. Its continuous batching needs a model exported with PagedAttention, which the 0.18
builder makes for CUDA only; on a CPU model it is a static batch (up to 4 requests begun together; a later one
waits until all of them end) that fails, leaving the Engine unusable, when their prompts differ in length, and it
offers no per-request seed and no logits (bench/onnx_engine.py measures and probes it; docs/batching.md). The
execution provider comes from ``--execution-provider`` (cpu, cuda, dml, qnn, openvino). Embeddings are not offered:
onnxruntime-genai exposes no pooled hidden states.

JSON output follows a schema through onnxruntime-genai's guidance (llguidance, ``GeneratorParams.set_guidance``
with ``json_schema``; the 0.18 wheels have it). Without whitespace rules a small model fills JSON with blank lines
until ``max_tokens``, so separators are fixed (``", "``, ``": "``, no other whitespace: :func:`guided_schema`),
as compact as llama.cpp's JSON grammar makes it; ``{}`` ("any JSON", Ollama's ``format: "json"``) asks for an
object, as the llama.cpp engine does. The first guided generation of a process prepares llguidance's view of the
vocabulary: about 9 s for Gemma 3's 262,144 tokens on one core, paid in :meth:`OnnxGenaiEngine.validate` (a worker
thread, before the request takes a slot), once.

Log-probabilities come from ``Generator.get_logits()`` read before ``generate_next_token`` (after it, the generator
has already run the model on the new token and the logits are the next step's); the copy of the row is made only
when a request asks."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

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
from slm_runtime.engines.logprobs import step_logprobs
from slm_runtime.engines.onnx_vocab import token_pieces
from slm_runtime.errors import EmbeddingsUnsupportedError, InvalidRequestError
from slm_runtime.settings import RuntimeSettings
from slm_runtime.workers import SlotThreads

__all__ = ["GUIDANCE_WHITESPACE", "MIN_MAX_LENGTH", "OnnxGenaiEngine", "guided_schema"]

log = logging.getLogger(__name__)

MIN_MAX_LENGTH = 512
"""onnxruntime-genai refuses a ``max_length`` below the sliding-window KV cache (512 for Gemma 3)."""

_PROVIDERS = {"openvino": "OpenVINO", "webgpu": "WebGPU"}  # names that differ from ours; others as given

GUIDANCE_WHITESPACE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""llguidance's JSON options (the schema's ``x-guidance`` key): fixed separators, no free whitespace."""


def guided_schema(schema: dict[str, Any]) -> str:
    """The JSON text given to ``set_guidance("json_schema", ...)`` for a request's schema (see the module doc)."""
    guided: dict[str, Any] = dict(schema) if schema else {"type": "object"}
    guided.setdefault("x-guidance", GUIDANCE_WHITESPACE)
    return json.dumps(guided)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class OnnxGenaiEngine(Engine):
    """ONNX models through onnxruntime-genai. Construct with :meth:`load`."""

    def __init__(
        self,
        settings: RuntimeSettings,
        model: Any,
        tokenizer: Any,
        info: ModelInfo,
        eos_ids: set[int],
        bos_id: int,
        pieces: dict[int, bytes] | None = None,
    ) -> None:
        self._model = model
        self._pieces = pieces or {}
        self._tokenizer = tokenizer
        self._info = info
        self._eos_ids = eos_ids
        self._bos_id = bos_id
        self._observer: StepObserver | None = None
        self._threads = SlotThreads(settings.server.parallel, name="slm-onnx")

    @classmethod
    def load(cls, settings: RuntimeSettings) -> OnnxGenaiEngine:
        import onnxruntime_genai as og

        folder = settings.model.model
        if not (folder / "genai_config.json").is_file():
            raise FileNotFoundError(f"{folder} is not an onnxruntime-genai folder (no genai_config.json)")
        config = og.Config(str(folder))
        config.clear_providers()
        provider = settings.engine.execution_provider
        if provider != "cpu":
            probe = getattr(og, f"is_{provider}_available", None)
            if probe is not None and not probe():
                raise RuntimeError(
                    f"execution provider {provider!r} is not available in this onnxruntime-genai build "
                    "(--execution-provider): install the matching onnxruntime-genai package or use cpu"
                )
            config.append_provider(_PROVIDERS.get(provider, provider))
        model = og.Model(config)
        tokenizer = og.Tokenizer(model)
        genai = _read_json(folder / "genai_config.json")
        tokenizer_config = _read_json(folder / "tokenizer_config.json")
        model_section = genai.get("model", {})
        train_context = int(model_section.get("context_length") or 0)
        context = settings.model.context_length or min(4096, train_context or 4096)
        eos = model_section.get("eos_token_id", [])
        eos_ids = {int(x) for x in (eos if isinstance(eos, list) else [eos])}
        eos_ids |= {int(x) for x in tokenizer.eos_token_ids}
        bos_id = int(model_section.get("bos_token_id", tokenizer.bos_token_id))
        template = tokenizer_config.get("chat_template")
        pieces = token_pieces(_read_json(folder / "tokenizer.json"))
        info = ModelInfo(
            format="onnx",
            engine="onnxruntime-genai",
            family=str(model_section.get("type", "")),
            parameter_size="",
            quantization=_quantization(folder),
            context_length=context,
            vocab_size=int(model_section.get("vocab_size") or 0),
            size_bytes=sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
            chat_template=template if isinstance(template, str) else None,
            bos_token=str(tokenizer_config.get("bos_token") or ""),
            eos_token=str(tokenizer_config.get("eos_token") or ""),
            supports_embeddings=False,
            supports_json_schema=hasattr(og.GeneratorParams, "set_guidance"),
            extra={"general.architecture": model_section.get("type", ""), "execution_provider": provider},
        )
        log.info("onnxruntime-genai model loaded from %s (provider %s)", folder, provider)
        return cls(settings, model, tokenizer, info, eos_ids, bos_id, pieces)

    @property
    def info(self) -> ModelInfo:
        return self._info

    def observe_steps(self, observer: StepObserver | None) -> None:
        self._observer = observer

    def after_steps(self, callback: Callable[[], None] | None) -> None:
        """Never called: each slot decodes on its own thread with onnxruntime's own thread pool, and waiting for
        the event loop between steps would only slow the other slots' delivery."""

    def expect_arrivals(self, count: ArrivalCount | None) -> None:
        """Never asked: each slot starts on its own generator at once, with nothing to read together."""

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        tokens = [int(t) for t in self._tokenizer.encode(text)]
        if add_special and self._bos_id >= 0 and (not tokens or tokens[0] != self._bos_id):
            tokens.insert(0, self._bos_id)
        return tokens

    def detokenize(self, tokens: Sequence[int]) -> str:
        import numpy as np

        text: str = self._tokenizer.decode(np.asarray(list(tokens), dtype=np.int32))
        return text

    def token_bytes(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        return piece if piece is not None else super().token_bytes(token_id)

    def validate(self, params: SamplingParams) -> None:
        """Refuse negative ``logprobs``; compile a JSON schema's guidance once (a generator made and dropped), so
        that a schema llguidance cannot use is a 400 before the request takes a slot."""
        if params.logprobs is not None and params.logprobs < 0:
            raise InvalidRequestError("logprobs must be 0 or more", param="logprobs")
        if params.json_schema is not None:
            import onnxruntime_genai as og

            generator_params = og.GeneratorParams(self._model)
            generator_params.set_search_options(max_length=MIN_MAX_LENGTH)
            try:
                self._guide(generator_params, params.json_schema)
                og.Generator(self._model, generator_params)  # compiles the grammar
            except RuntimeError as exc:  # llguidance's message, e.g. "Unimplemented keys: [\"not\"]"
                raise InvalidRequestError(
                    f"cannot constrain output to this JSON schema ({exc})", param="format"
                ) from exc

    @staticmethod
    def _guide(generator_params: Any, schema: dict[str, Any]) -> None:
        generator_params.set_guidance("json_schema", guided_schema(schema))

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        """Generate on the slot's own thread; ``sink`` gets the tokens, an error if one happens, then None."""
        self._threads.submit(slot, lambda: deliver(self._generate(prompt, params, cancel), sink))

    def _generate(
        self, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event
    ) -> Iterator[GeneratedToken]:
        import numpy as np
        import onnxruntime_genai as og

        if params.max_tokens <= 0 or cancel.is_set():
            return
        max_length = max(MIN_MAX_LENGTH, len(prompt) + params.max_tokens)
        search: dict[str, Any] = {
            "max_length": min(max_length, max(MIN_MAX_LENGTH, self._info.context_length)),
            "do_sample": params.temperature > 0,
            "repetition_penalty": params.repeat_penalty or 1.0,
        }
        if params.temperature > 0:
            search.update(
                temperature=params.temperature,
                top_k=min(params.top_k, self._info.vocab_size or 2**31 - 1),
                top_p=params.top_p,
                random_seed=(params.seed if params.seed is not None else random.randrange(2**31)) & 0x7FFFFFFF,
            )
        generator_params = og.GeneratorParams(self._model)
        generator_params.set_search_options(**search)
        if params.json_schema is not None:
            self._guide(generator_params, params.json_schema)
        generator = og.Generator(self._model, generator_params)
        generator.append_tokens(np.asarray(list(prompt), dtype=np.int32))
        self._observe(1, len(prompt))
        decoder = self._tokenizer.create_stream()
        scratch = np.empty(self._info.vocab_size, dtype=np.float32) if params.logprobs is not None else None
        produced = 0
        while not generator.is_done() and not cancel.is_set() and produced < params.max_tokens:
            row = generator.get_logits()[0, -1] if scratch is not None else None
            generator.generate_next_token()
            self._observe(1, 1)
            token = int(generator.get_next_tokens()[0])
            if token in self._eos_ids:
                break
            produced += 1
            if row is None or scratch is None:
                yield GeneratedToken(token, decoder.decode(token))
                continue
            if scratch.shape[0] < row.shape[0]:
                scratch = np.empty(row.shape[0], dtype=np.float32)
            logprob, top = step_logprobs(row, token, params.logprobs or 0, scratch)
            yield GeneratedToken(token, decoder.decode(token), logprob=logprob, top_logprobs=top)

    def _observe(self, sequences: int, tokens: int) -> None:
        # Each slot runs its own Generator: a step carries one sequence, never a batch of them.
        observer = self._observer
        if observer is not None:
            observer(sequences, tokens)

    def embed(self, texts: Sequence[str]) -> Embeddings:
        raise EmbeddingsUnsupportedError("the onnxruntime-genai engine does not produce embeddings")

    def close(self) -> None:
        self._threads.shutdown()
        self._model = None
        self._tokenizer = None


def _quantization(folder: Path) -> str:
    name = folder.name.lower()
    for marker in ("int4", "int8", "fp16", "fp32", "bf16"):
        if marker in name:
            return marker
    return "unknown"
