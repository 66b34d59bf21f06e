"""The onnxruntime-genai engine on Gemma 3 270M converted offline (hack/build_onnx_model.py), via both clients.

The folder is built once and cached under ${SLM_CACHE_HOME}/models; the fixture reuses it (CI keeps the cache).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import jsonschema
import ollama
import openai
import pytest
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, make_settings

from slm_runtime.engines.base import Engine, GeneratedToken, SamplingParams

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[3]
GREEDY = {"temperature": 0, "num_predict": 24}
SLOTS = 3
PROMPTS = (
    "The capital of France is",
    "1, 2, 3,",
    "Once upon a time, in a lighthouse on a rocky island far from the coast, there lived",
)


@pytest.fixture(scope="module")
def onnx_path() -> Path:
    result = subprocess.run(
        [sys.executable, str(ROOT / "hack" / "build_onnx_model.py")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        timeout=3600,
    )
    path = Path(result.stdout.strip().splitlines()[-1])
    assert (path / "genai_config.json").is_file()
    return path


@pytest.fixture(scope="module")
def onnx_server(onnx_path: Path) -> Iterator[LiveServer]:
    from slm_runtime.engines import load_engine

    settings = make_settings(onnx_path, model_digest=None)
    assert settings.engine_name == "onnxruntime-genai"
    server = LiveServer(settings, load_engine)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def ollama_client(onnx_server: LiveServer) -> ollama.Client:
    return ollama.Client(host=onnx_server.url, headers={"Authorization": f"Bearer {API_KEY}"})


@pytest.fixture
def openai_client(onnx_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=onnx_server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_generate_is_greedy_deterministic_and_streams(ollama_client: ollama.Client, llama_engine: Engine) -> None:
    first = ollama_client.generate(model=MODEL_NAME, prompt="The capital of France is", options=GREEDY)
    second = ollama_client.generate(model=MODEL_NAME, prompt="The capital of France is", options=GREEDY)
    assert first.response == second.response
    assert len(first.response.split()) >= 8
    # Same tokenizer as the GGUF, BOS included.
    assert first.context[: first.prompt_eval_count] == llama_engine.tokenize("The capital of France is")
    assert first.eval_count == 24 and first.done_reason == "length"
    chunks = list(
        ollama_client.generate(model=MODEL_NAME, prompt="The capital of France is", options=GREEDY, stream=True)
    )
    assert "".join(c.response for c in chunks) == first.response
    assert chunks[-1].done and chunks[-1].eval_count == 24


def test_chat_and_show(ollama_client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Hello!"}]
    reply = ollama_client.chat(model=MODEL_NAME, messages=messages, options=GREEDY)
    assert reply.message.role == "assistant" and reply.done
    chunks = list(ollama_client.chat(model=MODEL_NAME, messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == reply.message.content
    running = ollama_client.ps().models
    assert len(running) == 1 and running[0].details.format == "onnx"
    shown = ollama_client.show(MODEL_NAME)
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details.format == "onnx"
    assert [m.model for m in ollama_client.list().models] == [f"{MODEL_NAME}:latest"]


def test_embeddings_are_refused_with_400(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as embed:
        ollama_client.embed(model=MODEL_NAME, input="x")
    assert embed.value.status_code == 400 and "embeddings" in embed.value.error


def test_json_format_and_schema_go_through_guidance(ollama_client: ollama.Client) -> None:
    """onnxruntime-genai's guidance (llguidance): any JSON is an object, a schema's output validates, and a schema
    llguidance cannot use is a 400 that says why."""
    any_json = ollama_client.generate(
        model=MODEL_NAME, prompt="A person as JSON:", format="json", options=GREEDY | {"num_predict": 48}
    )
    assert isinstance(json.loads(any_json.response), dict)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}, "capital": {"type": "boolean"}},
        "required": ["city", "population", "capital"],
        "additionalProperties": False,
    }
    for options in (GREEDY | {"num_predict": 64}, {"temperature": 0.9, "seed": 7, "num_predict": 64}):
        reply = ollama_client.generate(
            model=MODEL_NAME, prompt="The largest city of France:", format=schema, options=options
        )
        jsonschema.validate(json.loads(reply.response), schema)
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.generate(model=MODEL_NAME, prompt="x", format={"not": {"type": "string"}})
    assert refused.value.status_code == 400 and "cannot constrain output to this JSON schema" in refused.value.error
    assert "not" in refused.value.error


def test_openai_chat_completions_and_streaming(openai_client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_NAME, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 16, "temperature": 0}
    whole = openai_client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    streamed = openai_client.chat.completions.create(**kwargs, stream=True)  # type: ignore[call-overload]
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole.choices[0].message.content
    completion = openai_client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0)
    assert "4" in completion.choices[0].text
    assert completion.usage.completion_tokens == 8
    assert [m.id for m in openai_client.models.list().data] == [MODEL_NAME]
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model=MODEL_NAME, input="x")


@pytest.fixture(scope="module")
def onnx_engine(onnx_path: Path) -> Iterator[Engine]:
    from slm_runtime.engines.onnx_genai import OnnxGenaiEngine

    engine = OnnxGenaiEngine.load(make_settings(onnx_path, model_digest=None, parallel=SLOTS))
    yield engine
    engine.close()


def test_log_probabilities_are_the_model_s_distribution(onnx_engine: Engine, llama_engine: Engine) -> None:
    """Read from the generator's logits before each step: greedy picks the most likely token, asking changes no
    output, and the token bytes agree with the GGUF's vocabulary (the same tokenizer)."""
    prompt = onnx_engine.tokenize("The capital of France is")
    greedy = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    plain = list(onnx_engine.stream(0, prompt, greedy, threading.Event()))
    asked = list(onnx_engine.stream(0, prompt, replace(greedy, logprobs=5), threading.Event()))
    assert [t.token_id for t in asked] == [t.token_id for t in plain]
    assert all(t.logprob is None for t in plain)
    for token in asked:
        values = [value for _, value in token.top_logprobs]
        assert token.top_logprobs[0] == (token.token_id, token.logprob)
        assert values == sorted(values, reverse=True) and len(values) == 5
        assert sum(math.exp(value) for value in values) <= 1.0 + 1e-6
    assert any(t.logprob is not None and t.logprob < -0.1 for t in asked)
    pieces = [onnx_engine.token_bytes(t.token_id) for t in asked]
    assert b"".join(pieces).decode() == "".join(t.text for t in asked)
    assert pieces == [llama_engine.token_bytes(t.token_id) for t in asked]
    sampled = replace(greedy, temperature=1.0, top_k=40, seed=3, logprobs=2)
    for token in onnx_engine.stream(0, prompt, sampled, threading.Event()):
        ranked = dict(token.top_logprobs)
        assert token.logprob is not None and ranked.get(token.token_id, token.logprob) == token.logprob


def test_unavailable_execution_provider_is_named(onnx_path: Path) -> None:
    from slm_runtime.engines.onnx_genai import OnnxGenaiEngine

    with pytest.raises(RuntimeError, match="'cuda' is not available"):
        OnnxGenaiEngine.load(make_settings(onnx_path, execution_provider="cuda"))


class Collected:
    """A sink that keeps one generation's tokens and says when it has ended; ``on_token`` runs on the engine's
    thread after each token."""

    def __init__(self, on_token: Callable[[int], None] | None = None) -> None:
        self.tokens: list[GeneratedToken] = []
        self.errors: list[BaseException] = []
        self.ended = threading.Event()
        self._on_token = on_token

    def __call__(self, item: GeneratedToken | BaseException | None) -> None:
        if item is None:
            self.ended.set()
        elif isinstance(item, BaseException):
            self.errors.append(item)
        else:
            self.tokens.append(item)
            if self._on_token is not None:
                self._on_token(len(self.tokens))

    def ids(self) -> list[int]:
        assert self.ended.wait(120), "the generation did not end"
        assert not self.errors
        return [t.token_id for t in self.tokens]


def test_concurrent_slots_generate_what_each_prompt_generates_alone(onnx_engine: Engine) -> None:
    """Every slot decodes its own Generator: prompts of different lengths started together give, token for token,
    what each gives alone (greedy), and every decode step carries one sequence (no batching across slots)."""
    greedy = SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0)
    prompts = [onnx_engine.tokenize(text) for text in PROMPTS]
    assert len({len(p) for p in prompts}) == len(prompts)
    alone = [[t.token_id for t in onnx_engine.stream(0, p, greedy, threading.Event())] for p in prompts]
    steps: list[tuple[int, int]] = []
    onnx_engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
    try:
        sinks = [Collected() for _ in prompts]
        for slot, (prompt, sink) in enumerate(zip(prompts, sinks, strict=True)):
            onnx_engine.start(slot, prompt, greedy, threading.Event(), sink)
        together = [sink.ids() for sink in sinks]
    finally:
        onnx_engine.observe_steps(None)
    assert together == alone
    assert all(len(ids) == 16 for ids in together)
    assert {sequences for sequences, _ in steps} == {1}
    assert sum(tokens for _, tokens in steps) == sum(len(p) for p in prompts) + 16 * len(prompts)


def test_cancelling_one_slot_ends_it_and_frees_it_while_the_others_continue(onnx_engine: Engine) -> None:
    """Cancellation is checked before each token: the cancelled slot ends after the token that asked, the slot
    generating beside it is unaffected, and the freed slot serves the next generation as if alone."""
    greedy = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    first, second = (onnx_engine.tokenize(text) for text in PROMPTS[:2])
    alone = [t.token_id for t in onnx_engine.stream(1, second, greedy, threading.Event())]
    cancel = threading.Event()
    cancelled = Collected(on_token=lambda count: cancel.set() if count == 3 else None)
    beside = Collected()
    onnx_engine.start(0, first, replace(greedy, max_tokens=400), cancel, cancelled)
    onnx_engine.start(1, second, greedy, threading.Event(), beside)
    assert len(cancelled.ids()) == 3
    assert beside.ids() == alone
    reused = [t.token_id for t in onnx_engine.stream(0, second, greedy, threading.Event())]
    assert reused == alone
