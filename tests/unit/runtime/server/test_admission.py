"""Admission at the door, on the fake engine: a full server answers 503 before it reads the body, a place taken at
the door is kept while the request is read (and given back when the request fails), the queue serves in arrival
order, and a stream's headers go out with its first token, at once."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Awaitable, Callable

from runtime_fast import MODEL, FastApp, serve, sse_events, wait_for
from starlette.types import Message, Scope

from slm_runtime.admission import AdmissionGate, RefusalPacer
from slm_runtime.engines.fake import FakeEngine
from slm_runtime.errors import OLLAMA_SERVER_BUSY
from slm_runtime.prompts.tokens import INLINE_TOKENIZE_CHARS

GENERATE = {"model": MODEL, "prompt": "Hi", "stream": False}


class CountingEngine(FakeEngine):
    """Counts tokenize calls; a text longer than INLINE_TOKENIZE_CHARS (tokenized on a worker thread) waits for
    ``tokenizing`` to be set."""

    def __init__(self) -> None:
        super().__init__()
        self.tokenized = 0
        self.tokenizing = threading.Event()
        self.tokenizing.set()

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        self.tokenized += 1
        if len(text) > INLINE_TOKENIZE_CHARS:
            self.tokenizing.wait(10)
        return super().tokenize(text, add_special=add_special)


class SteppedEngine(FakeEngine):
    """Produces a token only when the test allows one (:meth:`allow`)."""

    def __init__(self) -> None:
        super().__init__(token_delay=0.0)
        self._permits = threading.Semaphore(0)
        self.produced = 0
        self.stepping = False

    def allow(self, tokens: int = 1) -> None:
        for _ in range(tokens):
            self._permits.release()

    def _wait(self, cancel: threading.Event) -> bool:
        if not self.stepping:
            return super()._wait(cancel)  # the warm-up runs freely
        while not self._permits.acquire(timeout=0.005):
            if cancel.is_set():
                return False
        self.produced += 1
        return not cancel.is_set()


async def post(
    app: FastApp, path: str, body: dict[str, object], sent: Callable[[Message], Awaitable[None]] | None = None
) -> tuple[list[Message], bool]:
    """POST ``body`` at the ASGI level; the messages the app sent, and whether it ever read the body."""
    messages: list[Message] = []
    read = False
    connected = asyncio.Event()  # never set: the client stays until the response ends

    async def receive() -> Message:
        nonlocal read
        if read:
            await connected.wait()
        read = True
        return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)
        if sent is not None:
            await sent(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"host", b"slm.test")],
        "client": ("127.0.0.1", 40000),
        "server": ("slm.test", 80),
    }
    await app.asgi(scope, receive, send)
    return messages, read


def test_a_full_server_answers_503_without_reading_the_body() -> None:
    engine = CountingEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        queued = asyncio.create_task(app.client.post("/api/generate", json=GENERATE))
        await wait_for(lambda: app.service.scheduler.waiting == 1, "the second request to queue")
        tokenized = engine.tokenized
        for path in ("/api/chat", "/v1/completions"):
            messages, read = await post(app, path, {"model": MODEL, "prompt": "never read"})
            assert messages[0]["status"] == 503 and not read
            assert (b"retry-after", b"1") in messages[0]["headers"]
        assert json.loads(messages[1]["body"])["error"]["code"] == "server_busy"
        assert engine.tokenized == tokenized
        assert app.metric("slm_requests_total", outcome="busy") == 2
        assert app.service.scheduler.reserved == 0
        engine.gate.set()
        assert [(await r).status_code for r in (running, queued)] == [200, 200]

    serve(scenario, engine, max_queue=1)


def test_a_place_taken_at_the_door_is_kept_while_the_request_is_read() -> None:
    engine = CountingEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        engine.tokenizing.clear()
        long_prompt = {"model": MODEL, "prompt": "x" * (INLINE_TOKENIZE_CHARS + 1), "stream": False}
        reading = asyncio.create_task(app.client.post("/api/generate", json=long_prompt))
        await wait_for(lambda: app.service.scheduler.reserved == 1, "the long prompt to take its place")
        assert app.service.scheduler.waiting == 0  # still tokenizing: not queued yet, but its place is counted
        refused = await app.client.post("/api/generate", json=GENERATE)
        assert (refused.status_code, refused.json()) == (503, {"error": OLLAMA_SERVER_BUSY})
        engine.tokenizing.set()
        await wait_for(lambda: app.service.scheduler.waiting == 1, "the long prompt to queue with its place")
        assert app.service.scheduler.reserved == 0
        engine.gate.set()
        assert [(await r).status_code for r in (running, reading)] == [200, 200]

    serve(scenario, engine, max_queue=1)


def test_a_request_that_fails_before_its_slot_gives_its_place_back() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        invalid = await app.client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi", "n": 2, "best_of": 3})
        assert invalid.status_code == 400
        wrong_model = await app.client.post("/api/generate", json={**GENERATE, "model": "other"})
        assert wrong_model.status_code == 404
        assert app.service.scheduler.reserved == 0
        queued = asyncio.create_task(app.client.post("/api/generate", json=GENERATE))
        await wait_for(lambda: app.service.scheduler.waiting == 1, "a valid request to take the queue's place")
        engine.gate.set()
        assert [(await r).status_code for r in (running, queued)] == [200, 200]

    serve(scenario, engine, max_queue=1)


def test_queued_requests_get_the_slot_in_arrival_order() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        queued = []
        for index, prompt in enumerate(("first", "second", "third", "fourth")):
            body = {**GENERATE, "prompt": prompt}
            queued.append(asyncio.create_task(app.client.post("/api/generate", json=body)))
            await wait_for(lambda: app.service.scheduler.waiting == index + 1, f"request {prompt} to queue")  # noqa: B023
        engine.gate.set()
        assert [(await r).status_code for r in (running, *queued)] == [200] * 5
        prompts = [engine.detokenize(started.prompt) for started in engine.started[-4:]]
        assert prompts == ["first", "second", "third", "fourth"]

    serve(scenario, engine, max_queue=4)


def test_a_stream_s_headers_go_out_with_its_first_token_at_once() -> None:
    engine = SteppedEngine()

    async def scenario(app: FastApp) -> None:
        engine.stepping = True
        first_sent = asyncio.Event()

        async def sent(message: Message) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first_sent.set()

        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "stream": True, "max_tokens": 3}
        call = asyncio.create_task(post(app, "/v1/chat/completions", body, sent))
        await wait_for(lambda: app.service.scheduler.running == 1, "the stream to take its slot")
        await asyncio.sleep(0.05)
        assert not first_sent.is_set()  # admitted, no token yet: nothing sent, not even the headers
        engine.allow()
        await asyncio.wait_for(first_sent.wait(), 5)
        assert engine.produced == 1  # the first token went out before the second was made
        engine.allow(2)
        messages, _ = await call
        start, first, *rest = messages
        assert start["type"] == "http.response.start" and start["status"] == 200
        events = sse_events(first["body"].decode())
        assert [json.loads(e)["choices"][0]["delta"] for e in events] == [
            {"role": "assistant", "content": ""},
            {"content": engine.reply[0]},
        ]
        assert sse_events(b"".join(m.get("body", b"") for m in rest).decode())[-1] == "[DONE]"

    serve(scenario, engine)


def test_refusals_are_answered_at_once_then_spaced_out_in_a_storm() -> None:
    now = [100.0]
    pacer = RefusalPacer(rate=10, burst=3, max_delay=0.5, clock=lambda: now[0])
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]
    storm = [round(pacer.delay(), 3) for _ in range(8)]
    assert storm == [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5]  # 10 per second, none held past max_delay
    now[0] += 10  # the storm has passed: the burst is there again
    assert [pacer.delay() for _ in range(3)] == [0.0, 0.0, 0.0]


class RecordingPacer(RefusalPacer):
    """A pacer on a stopped clock (the delays depend only on how many refusals came), recording each delay."""

    def __init__(self) -> None:
        super().__init__(rate=50, burst=2, max_delay=1.0, clock=lambda: 0.0)
        self.delays: list[float] = []

    def delay(self) -> float:
        self.delays.append(super().delay())
        return self.delays[-1]


def _gate(app: FastApp) -> AdmissionGate:
    layer: object = app.app.middleware_stack
    while not isinstance(layer, AdmissionGate):
        layer = getattr(layer, "app")  # noqa: B009 - each middleware holds the next as .app
    return layer


def test_the_gate_holds_back_refusals_past_the_burst() -> None:
    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()  # (the app builds its middleware stack at the first request)
        pacer = RecordingPacer()
        _gate(app).pacer = pacer
        answers = [await app.client.post("/api/generate", json=GENERATE) for _ in range(5)]
        assert [a.status_code for a in answers] == [503] * 5
        assert [round(d, 3) for d in pacer.delays] == [0.0, 0.0, 0.02, 0.04, 0.06]
        app.engine.gate.set()
        assert (await running).status_code == 200

    serve(scenario, max_queue=0)
