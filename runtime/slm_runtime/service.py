"""The model service: loads the engine, says whether it is ready, admits requests through the scheduler.

What runs a request lives beside it, each in its own module: the prompt (:mod:`slm_runtime.prompts`), the
generation (:mod:`slm_runtime.generation`) and its thread->loop bridge (:mod:`slm_runtime.bridge`), embeddings
(:mod:`slm_runtime.embeddings`), and the prelude and outcome bookkeeping every request shares
(:mod:`slm_runtime.request_context`). Blocking engine calls run off the event loop: the load and the warm-up in
the default pool, generations on the engine's own threads, embeddings on the service's embedding thread
(see :mod:`slm_runtime.workers`). A request's ``keep_alive`` may unload the model once it is idle; the next request
that needs it loads it again (:mod:`slm_runtime.residency`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from slm_runtime.bridge import TokenBridge
from slm_runtime.engines.base import Engine, ModelInfo
from slm_runtime.errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerBusyError,
)
from slm_runtime.metrics import Metrics
from slm_runtime.options import RequestOptions, resolve_sampling
from slm_runtime.prompts import PromptBuilder, PromptTemplate, select_template
from slm_runtime.residency import Residency
from slm_runtime.scheduler import Lease, Scheduler, Ticket
from slm_runtime.settings import RuntimeSettings
from slm_runtime.shutdown import MODEL_LOAD_FAILED, Shutdown
from slm_runtime.workers import SlotThreads

__all__ = ["EngineLoader", "ModelService"]

log = logging.getLogger(__name__)

EngineLoader = Callable[[RuntimeSettings], Engine]


class ModelService:
    """One served model: its engine, prompt builder, scheduler and metrics, and whether it is ready."""

    def __init__(
        self, settings: RuntimeSettings, metrics: Metrics, loader: EngineLoader, shutdown: Shutdown | None = None
    ) -> None:
        self.settings = settings
        self.shutdown = shutdown or Shutdown()
        self.metrics = metrics
        self.name = settings.served_name
        self._loader = loader
        self._engine: Engine | None = None
        self._info: ModelInfo | None = None
        self._prompts: PromptBuilder | None = None
        self._swap = asyncio.Lock()
        """Held while the engine is unloaded or loaded again."""
        self._reloading: asyncio.Task[None] | None = None
        self.residency = Residency(self.unload, honour=settings.server.honour_keep_alive)
        self._ready = asyncio.Event()
        self.load_error: BaseException | None = None
        self.loaded_at: datetime | None = None
        self.scheduler = Scheduler(settings.server.parallel, settings.server.max_queue, metrics.scheduler_changed)
        self.bridge = TokenBridge()
        self.embed_thread = SlotThreads(1, name="slm-embed")
        """Embeddings are computed one at a time, always on this thread (llama.cpp's OpenMP team stays one)."""

    # --- lifecycle --------------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Loaded, warmed up, and not stopping."""
        return self._ready.is_set() and not self.shutdown.draining

    @property
    def loaded(self) -> bool:
        """The model is in memory (a request's keep_alive may have unloaded it since it was ready)."""
        return self._engine is not None

    async def _open(self) -> tuple[Engine, PromptTemplate]:
        """A loaded, warmed-up engine wired to the service, and its template."""
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
        engine.observe_steps(self.metrics.batch_step)
        engine.after_steps(self.bridge.mailbox(asyncio.get_running_loop()).wait_delivered)
        scheduler = self.scheduler
        engine.expect_arrivals(lambda: scheduler.arriving)
        return engine, template

    async def load(self) -> None:
        """Load the engine off the event loop, produce one warm-up token, then mark the service ready."""
        started = time.perf_counter()
        log.info("loading model %s from %s", self.name, self.settings.model.model)
        try:
            engine, template = await self._open()
        except Exception as exc:
            self.load_error = exc
            log.exception("loading model %s failed", self.name)
            self.shutdown.fail(MODEL_LOAD_FAILED, f"loading model {self.name} failed: {exc}")
            raise
        info = engine.info
        self._engine = engine
        self._info = info
        self._prompts = PromptBuilder(template, self.settings.model)
        elapsed = time.perf_counter() - started
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

    async def unload(self) -> None:
        """Free the model's memory once no generation runs (a request's keep_alive asked); it loads again when a
        request needs it."""
        async with self._swap:
            engine = self._engine
            if engine is None or self.shutdown.draining:
                return
            while self.scheduler.running or self.scheduler.waiting or self.residency.holds:
                if self.residency.holds:
                    return  # a request arrived meanwhile: it keeps the model
                await asyncio.sleep(0.05)
            self._engine = None
            await asyncio.to_thread(engine.close)
            log.info("model %s unloaded (keep_alive)", self.name)

    async def _reload(self) -> None:
        async with self._swap:
            if self._engine is not None:
                return
            started = time.perf_counter()
            log.info("loading model %s again", self.name)
            engine, _ = await self._open()
            self._engine = engine
            self.loaded_at = datetime.now(UTC)
            self.metrics.model_load_seconds.labels(self.name).set(time.perf_counter() - started)

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout`` seconds) for running generations to stop, so the engine can be closed."""
        deadline = time.perf_counter() + timeout
        while self.scheduler.running and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        if self.scheduler.running:
            log.warning("%d generation(s) still running at shutdown", self.scheduler.running)

    def close(self) -> None:
        self.residency.cancel()
        self.embed_thread.shutdown()
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
        if self._engine is None:
            if self._reloading is None or self._reloading.done():
                self._reloading = asyncio.create_task(self._reload(), name="slm-model-reload")
            try:
                await asyncio.wait_for(asyncio.shield(self._reloading), max(0.0, deadline - time.perf_counter()))
            except TimeoutError as exc:
                raise ModelNotReadyError(f"model {self.name} is loading again, retry shortly") from exc
            except Exception as exc:
                log.exception("loading model %s again failed", self.name)
                raise ModelNotReadyError(f"model {self.name} failed to load again: {type(exc).__name__}") from exc
        return self.engine

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly")
        return self._engine

    @property
    def info(self) -> ModelInfo:
        """What the engine said of the model when it loaded (still known while a keep_alive has unloaded it)."""
        if self._info is None:
            raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly")
        return self._info

    @property
    def prompts(self) -> PromptBuilder:
        """The prompt builder of the served template (ModelNotReadyError until the model has loaded)."""
        if self._prompts is None:
            raise ModelNotReadyError(f"model {self.name} is still loading, retry shortly")
        return self._prompts

    # --- names ------------------------------------------------------------------------------------------

    def serves(self, name: str) -> bool:
        """Whether ``name`` names the served model (``:latest`` is implied)."""
        return name.removesuffix(":latest") == self.name.removesuffix(":latest")

    def check_model(self, name: str | None) -> None:
        """Raise ModelNotFoundError unless ``name`` names the served model."""
        if not name:
            raise InvalidRequestError('model is required: set "model" to ' + repr(self.name), param="model")
        if not self.serves(name):
            raise ModelNotFoundError(name)

    # --- admission --------------------------------------------------------------------------------------

    def reserve(self) -> Ticket:
        """A place for a generation request before it is read (see :meth:`Scheduler.reserve`); ServerBusyError
        when the server holds all the requests it may. (A stopping server refuses at :meth:`admit`, and one whose
        model failed says so there.)"""
        return self.scheduler.reserve()

    async def admit(self, deadline: float, labels: tuple[str, str], ticket: Ticket | None = None) -> Lease:
        """A lease on a slot, the wait for it observed as queue time; ServerBusyError when the queue is full (and
        ``ticket`` reserved no place) or the server is stopping, RequestTimeoutError when no slot frees up before
        ``deadline``."""
        if self.shutdown.draining:
            raise ServerBusyError()
        queued = time.perf_counter()
        try:
            lease = await asyncio.wait_for(self.scheduler.acquire(ticket), max(0.0, deadline - queued))
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"timed out after {self.settings.server.request_timeout:g}s waiting for a free slot"
            ) from exc
        self.metrics.queue_time.labels(*labels).observe(time.perf_counter() - queued)
        return lease
