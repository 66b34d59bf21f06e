"""The model service: loads the engine, admits requests through the scheduler and streams generations.

API-neutral: the Ollama and OpenAI serving modules turn its events into their own wire formats. Blocking
engine calls run off the event loop: generations on the engine's own threads (``Engine.start``, whose sink posts
the tokens through the mailbox), embeddings on the service's embedding thread (see :mod:`slm_runtime.workers`),
the rest in the default pool. A generation stops when its consumer goes away (client disconnect, timeout) and
hands its slot back only once the engine has stopped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from slm_runtime.accesslog import AccessRecord
from slm_runtime.engines.base import Embeddings, Engine, GeneratedToken, SamplingParams
from slm_runtime.engines.templates import ChatMessage, OllamaTemplate, PromptTemplate, select_template
from slm_runtime.errors import (
    ContextLengthExceededError,
    EmbeddingsUnsupportedError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerBusyError,
)
from slm_runtime.mailbox import Mailbox
from slm_runtime.metrics import Metrics
from slm_runtime.options import RequestOptions, resolve_sampling
from slm_runtime.scheduler import Lease, Scheduler
from slm_runtime.settings import RuntimeSettings
from slm_runtime.stops import StopMatcher
from slm_runtime.workers import SlotThreads

__all__ = ["Admitted", "EngineLoader", "GenerationDone", "GenerationEvent", "ModelService", "TextChunk"]

log = logging.getLogger(__name__)

EngineLoader = Callable[[RuntimeSettings], Engine]
DoneReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Admitted:
    """The request got a slot: from here on, errors arrive as the last chunk of a stream."""

    queue_seconds: float


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class GenerationDone:
    done_reason: DoneReason
    prompt_tokens: int
    completion_tokens: int
    total_duration_ns: int
    load_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    context: list[int] = field(default_factory=list)


GenerationEvent = Admitted | TextChunk | GenerationDone


class ModelService:
    """One served model: its engine, template, scheduler and metrics, and whether it is ready."""

    def __init__(self, settings: RuntimeSettings, metrics: Metrics, loader: EngineLoader) -> None:
        self.settings = settings
        self.metrics = metrics
        self.name = settings.served_name
        self._loader = loader
        self._engine: Engine | None = None
        self._template: PromptTemplate | None = None
        self._ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self.load_duration_ns = 0
        self.loaded_at: datetime | None = None
        self.workers = SlotThreads(1, name="slm-embed")
        """Embeddings are computed one at a time, always on this thread (llama.cpp's OpenMP team stays one)."""
        self._mailbox_box: Mailbox | None = None
        self.scheduler = Scheduler(settings.server.parallel, settings.server.max_queue, metrics.scheduler_changed)

    # --- lifecycle --------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def load(self) -> None:
        """Load the engine off the event loop, produce one warm-up token, then mark the service ready."""
        started = time.perf_counter()
        log.info("loading model %s from %s", self.name, self.settings.model.model)
        try:
            engine = await asyncio.to_thread(self._loader, self.settings)
            info = engine.info
            template = select_template(
                self.settings.model.template,
                info.chat_template,
                bos_token=info.bos_token,
                eos_token=info.eos_token,
            )
            warm_prompt = await asyncio.to_thread(engine.tokenize, "Hello", add_special=True)
            params = resolve_sampling(self.settings.sampling, RequestOptions(temperature=0.0), 1)
            await asyncio.to_thread(lambda: list(engine.stream(0, warm_prompt, params, threading.Event())))
        except BaseException as exc:
            self.load_error = exc
            log.exception("loading model %s failed", self.name)
            raise
        engine.observe_steps(self.metrics.batch_step)
        engine.after_steps(self._mailbox(asyncio.get_running_loop()).wait_delivered)
        self._engine = engine
        self._template = template
        elapsed = time.perf_counter() - started
        self.load_duration_ns = int(elapsed * 1e9)
        self.loaded_at = datetime.now(UTC)
        self.metrics.model_load_seconds.labels(self.name).set(elapsed)
        self.metrics.set_model_info(
            format=info.format,
            engine=info.engine,
            quantization=info.quantization,
            digest=self.settings.model.model_digest or "",
        )
        self._ready.set()
        log.info("model %s ready in %.2fs (%s, %s)", self.name, elapsed, info.engine, info.quantization)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for running generations to stop, so the engine can be closed."""
        deadline = time.perf_counter() + timeout
        while self.scheduler.running and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        if self.scheduler.running:
            log.warning("%d generation(s) still running at shutdown", self.scheduler.running)

    def close(self) -> None:
        self.workers.shutdown()
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    async def wait_ready(self, deadline: float) -> Engine:
        """The engine, waiting for the load to finish (until ``deadline``, a perf_counter time)."""
        if not self._ready.is_set():
            if self.load_error is not None:
                raise ModelNotReadyError(f"model {self.name} failed to load: {type(self.load_error).__name__}")
            try:
                await asyncio.wait_for(self._ready.wait(), max(0.0, deadline - time.perf_counter()))
            except TimeoutError as exc:
                raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly") from exc
        assert self._engine is not None
        return self._engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly")
        return self._engine

    @property
    def template(self) -> PromptTemplate:
        if self._template is None:
            raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly")
        return self._template

    def deadline(self, started: float) -> float:
        return started + self.settings.server.request_timeout

    # --- names ------------------------------------------------------------------------------------------

    def check_model(self, name: str | None) -> None:
        """Raise ModelNotFoundError unless ``name`` names the served model (``:latest`` is implied)."""
        if not name:
            raise InvalidRequestError('model is required: set "model" to ' + repr(self.name), param="model")
        if name.removesuffix(":latest") != self.name.removesuffix(":latest"):
            raise ModelNotFoundError(name)

    # --- prompts ----------------------------------------------------------------------------------------

    @staticmethod
    def check_token_ids(engine: Engine, tokens: Sequence[int], param: str) -> None:
        """Refuse token ids the model does not have (engines may abort on them)."""
        vocab = engine.info.vocab_size
        for index, token in enumerate(tokens):
            if token < 0 or (vocab and token >= vocab):
                raise InvalidRequestError(
                    f"{param}[{index}] = {token} is not a token id of this model (0..{vocab - 1})", param=param
                )

    async def tokenize_text(self, engine: Engine, text: str) -> list[int]:
        """Tokens of rendered prompt text; BOS is added unless the template already wrote it."""
        bos = engine.info.bos_token
        add_special = not (bos and text.startswith(bos))
        return await asyncio.to_thread(engine.tokenize, text, add_special=add_special)

    def chat_text(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt of a chat: the default system prompt (unless a message is a system one), the preset
        messages (Ollama MESSAGE), then the request's messages."""
        messages = [*self._preset(), *messages]
        system = self.settings.model.system
        if system and not any(m.role == "system" for m in messages):
            messages = [ChatMessage("system", system), *messages]
        return self.template.render_chat(messages)

    def generate_text(
        self, prompt: str, system: str | None, template: str | None, raw: bool, *, first_turn: bool = True
    ) -> str:
        """The prompt of a generate request. As in Ollama, a first turn (no ``context`` carried over) gets the
        preset messages between the system prompt and the prompt; a raw request gets its text unchanged."""
        if raw:
            return prompt
        chosen: PromptTemplate = OllamaTemplate(template) if template else self.template
        system = system if system is not None else self.settings.model.system
        preset = self._preset() if first_turn else []
        if preset:
            head = [ChatMessage("system", system)] if system else []
            return chosen.render_chat([*head, *preset, ChatMessage("user", prompt)])
        return chosen.render_generate(prompt, system)

    def _preset(self) -> list[ChatMessage]:
        return [ChatMessage(m.role, m.content) for m in self.settings.model.messages]

    def stops_for(self, template: str | None, raw: bool) -> tuple[str, ...]:
        if raw or template:
            return ()
        return self.template.stop

    # --- generation -------------------------------------------------------------------------------------

    def _fit(self, tokens: list[int], context: int, options: RequestOptions) -> list[int]:
        if len(tokens) < context:
            return tokens
        if not options.truncate:
            raise ContextLengthExceededError(
                f"the prompt is {len(tokens)} tokens, longer than the context length of {context} tokens: "
                "shorten it, raise the context length (--context-length / options.num_ctx) or send "
                '"truncate": true',
                param="prompt",
            )
        keep = context * 3 // 4
        head = tokens[:1]
        return head + tokens[len(tokens) - (keep - 1) :]

    async def _acquire(self, deadline: float, api: str) -> Lease:
        try:
            return await asyncio.wait_for(self.scheduler.acquire(), max(0.0, deadline - time.perf_counter()))
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"timed out after {self.settings.server.request_timeout:g}s waiting for a free slot"
            ) from exc

    async def generate(
        self,
        prompt: list[int],
        options: RequestOptions,
        *,
        api: str,
        started: float,
        record: AccessRecord,
    ) -> AsyncGenerator[GenerationEvent, None]:
        """Stream text chunks, then one GenerationDone. Raises APIError subclasses."""
        labels = (self.name, api)
        outcome = "error"
        try:
            events = self._generate(prompt, options, api=api, started=started, record=record)
            async with aclosing(events):
                async for event in events:
                    yield event
            outcome = "ok"
        except ServerBusyError:
            outcome = "busy"
            raise
        except (GeneratorExit, asyncio.CancelledError):
            outcome = "cancelled"
            raise
        finally:
            record.outcome = outcome
            self.metrics.requests.labels(*labels, outcome).inc()
            self.metrics.request_duration.labels(*labels).observe(time.perf_counter() - started)

    async def _generate(
        self,
        prompt: list[int],
        options: RequestOptions,
        *,
        api: str,
        started: float,
        record: AccessRecord,
    ) -> AsyncGenerator[GenerationEvent, None]:
        deadline = self.deadline(started)
        engine = await self.wait_ready(deadline)
        info = engine.info
        limit = min(self.settings.model.context_length or info.context_length, info.context_length)
        context = min(options.num_ctx or limit, limit)
        tokens = self._fit(prompt, context, options)
        room = context - len(tokens)
        num_predict = options.num_predict if options.num_predict is not None else self.settings.sampling.num_predict
        max_tokens = room if num_predict < 0 else min(num_predict, room)
        params = resolve_sampling(self.settings.sampling, options, max_tokens)
        if params.json_schema is not None and not info.supports_json_schema:
            raise InvalidRequestError(
                f"the {info.engine} engine cannot constrain output to JSON: remove the format", param="format"
            )
        await asyncio.to_thread(engine.validate, params)
        stops = options.stop if options.stop is not None else self.settings.sampling.stop
        matcher = StopMatcher((*stops, *options.extra_stop))
        labels = (self.name, api)
        record.prompt_tokens = len(tokens)

        queued = time.perf_counter()
        lease = await self._acquire(deadline, api)
        waited = time.perf_counter() - queued
        self.metrics.queue_time.labels(*labels).observe(waited)
        try:
            yield Admitted(waited)
        except BaseException:
            lease.release()
            raise
        generated: list[int] = []
        gen_started = time.perf_counter()
        first_token_at = gen_started
        last_token_at = gen_started
        self.metrics.prompt_tokens.labels(*labels).inc(len(tokens))
        if max_tokens <= 0:
            lease.release()
        else:
            tokens_out = self._run(engine, lease, tokens, params, deadline)
            async with aclosing(tokens_out):
                async for token in tokens_out:
                    now = time.perf_counter()
                    if not generated:
                        first_token_at = now
                        self.metrics.time_to_first_token.labels(*labels).observe(now - started)
                    else:
                        self.metrics.inter_token_latency.labels(*labels).observe(now - last_token_at)
                    last_token_at = now
                    generated.append(token.token_id)
                    record.completion_tokens = len(generated)
                    self.metrics.generation_tokens.labels(*labels).inc()
                    text = matcher.feed(token.text)
                    if text:
                        yield TextChunk(text)
                    if matcher.stopped:
                        break
        tail = matcher.flush()
        if tail:
            yield TextChunk(tail)
        finished = time.perf_counter()
        reason: DoneReason = "length" if not matcher.stopped and len(generated) >= max_tokens else "stop"
        yield GenerationDone(
            done_reason=reason,
            prompt_tokens=len(tokens),
            completion_tokens=len(generated),
            total_duration_ns=int((finished - started) * 1e9),
            load_duration_ns=0,
            prompt_eval_duration_ns=int((first_token_at - gen_started) * 1e9),
            eval_duration_ns=int((finished - first_token_at) * 1e9),
            context=[*tokens, *generated],
        )

    def _mailbox(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        if self._mailbox_box is None or self._mailbox_box.loop is not loop:
            self._mailbox_box = Mailbox(loop)
        return self._mailbox_box

    async def _run(
        self,
        engine: Engine,
        lease: Lease,
        prompt: list[int],
        params: SamplingParams,
        deadline: float,
    ) -> AsyncGenerator[GeneratedToken, None]:
        """The engine's tokens, delivered on the engine's thread through the mailbox (a burst in one loop wake-up);
        closing this generator sets ``cancel``. The slot is handed back at the engine's end."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[GeneratedToken | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()
        mailbox = self._mailbox(loop)

        def sink(item: GeneratedToken | BaseException | None) -> None:
            try:
                mailbox.put(queue, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()
            if item is None:
                with suppress(RuntimeError):
                    loop.call_soon_threadsafe(lease.release)

        try:
            await asyncio.to_thread(engine.start, lease.slot, prompt, params, cancel, sink)
        except BaseException:
            lease.release()
            raise
        try:
            while True:
                remaining = deadline - time.perf_counter()
                try:
                    # Take what is already there without a timer task; wait (bounded) only when empty.
                    item = (
                        queue.get_nowait()
                        if not queue.empty()
                        else await asyncio.wait_for(queue.get(), max(0.0, remaining))
                    )
                except TimeoutError as exc:
                    timeout = self.settings.server.request_timeout
                    raise RequestTimeoutError(f"generation stopped after the request timeout of {timeout:g}s") from exc
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()

    # --- embeddings -------------------------------------------------------------------------------------

    async def embed(
        self, texts: Sequence[str], *, api: str, started: float, record: AccessRecord, truncate: bool
    ) -> Embeddings:
        labels = (self.name, api)
        outcome = "error"
        try:
            deadline = self.deadline(started)
            engine = await self.wait_ready(deadline)
            if not (engine.info.supports_embeddings and self.settings.engine.embeddings):
                raise EmbeddingsUnsupportedError(
                    f"model {self.name} does not support embeddings (engine {engine.info.engine})"
                )
            context = engine.info.context_length
            prepared: list[str] = []
            for text in texts:
                tokens = await asyncio.to_thread(engine.tokenize, text, add_special=True)
                if len(tokens) >= context:
                    if not truncate:
                        raise ContextLengthExceededError(
                            f"an input is {len(tokens)} tokens, longer than the context length of {context} "
                            'tokens: shorten it or send "truncate": true',
                            param="input",
                        )
                    prepared.append(await asyncio.to_thread(engine.detokenize, tokens[1 : context - 1]))
                else:
                    prepared.append(text)
            queued = time.perf_counter()
            lease = await self._acquire(deadline, api)
            self.metrics.queue_time.labels(*labels).observe(time.perf_counter() - queued)
            try:
                result = await asyncio.wrap_future(self.workers.submit(0, lambda: engine.embed(prepared)))
            finally:
                lease.release()
            record.prompt_tokens = sum(result.token_counts)
            self.metrics.prompt_tokens.labels(*labels).inc(record.prompt_tokens)
            outcome = "ok"
            return result
        except ServerBusyError:
            outcome = "busy"
            raise
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            record.outcome = outcome
            self.metrics.requests.labels(*labels, outcome).inc()
            self.metrics.request_duration.labels(*labels).observe(time.perf_counter() - started)
