"""The official `openai` Python client against the live server on the real model."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import openai
import pytest
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, make_settings
from starlette.testclient import TestClient

from slm_runtime.app import create_app
from slm_runtime.engines.llama_cpp import LlamaCppEngine

pytestmark = pytest.mark.model


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL_NAME]
    assert client.models.retrieve(MODEL_NAME).id == MODEL_NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


def test_chat_completion_with_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a color."}],
        max_tokens=16,
        temperature=0,
    )
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_usage_reports_the_prompt_tokens_served_from_the_prompt_cache(gguf_path: Path) -> None:
    settings = make_settings(gguf_path)  # the prompt cache is on by default
    app = create_app(settings, engine_loader=LlamaCppEngine.load)
    system = "You are the archivist of the lighthouse on the northern cape, built in 1851 and rebuilt in 1903. " * 4
    with TestClient(app, base_url="http://runtime") as http:
        while http.get("/readyz").status_code != 200:
            time.sleep(0.02)
        client = openai.OpenAI(base_url="http://runtime/v1", api_key=API_KEY, max_retries=0, http_client=http)

        def ask(question: str, **extra: object) -> openai.types.CompletionUsage:
            messages = [{"role": "system", "content": system}, {"role": "user", "content": question}]
            answer = client.chat.completions.create(
                model=MODEL_NAME,
                messages=messages,
                max_tokens=4,
                temperature=0,
                **extra,  # type: ignore[arg-type]
            )
            chunks = list(answer) if extra.get("stream") else [answer]
            usage = chunks[-1].usage
            assert usage is not None and usage.prompt_tokens_details is not None
            return usage

        first = ask("When was it built?")
        second = ask("When was it rebuilt?")
        streamed = ask("Who keeps it?", stream=True, stream_options={"include_usage": True})
    # The first request read the whole prompt; the next ones took the system prompt from the cache and re-read only
    # their question and at least 16 tokens.
    assert first.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    for later in (second, streamed):
        cached = later.prompt_tokens_details.cached_tokens  # type: ignore[union-attr]
        assert first.prompt_tokens - 40 < cached <= later.prompt_tokens - 16, (first, later)


def test_chat_streaming_equals_non_streaming(client: openai.OpenAI) -> None:
    kwargs = {
        "model": MODEL_NAME,
        "messages": [{"role": "user", "content": "Tell me about the sea."}],
        "max_tokens": 20,
        "temperature": 0,
        "seed": 3,
    }
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_text_completion_and_stream(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0)
    assert completion.choices[0].text.startswith(" 4")
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 8
    streamed = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed) == completion.choices[0].text
    echoed = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == "1, 2, 3," + completion.choices[0].text


def test_default_max_tokens_is_openais_16(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL_NAME, prompt="Once upon a time", temperature=0)
    assert completion.usage.completion_tokens == 16


def test_response_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    completion = client.chat.completions.create(
        model=MODEL_NAME,
        messages=[{"role": "user", "content": "A city as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        max_tokens=60,
        temperature=0,
    )
    data = json.loads(completion.choices[0].message.content or "")
    assert isinstance(data["city"], str) and isinstance(data["population"], int)


def test_embeddings_float_and_base64(client: openai.OpenAI) -> None:
    floats = client.embeddings.create(model=MODEL_NAME, input=["hello", "world"], encoding_format="float")
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 640
    assert floats.usage.prompt_tokens >= 2
    decoded = client.embeddings.create(model=MODEL_NAME, input="hello")  # the client asks for base64
    assert decoded.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-5, abs=1e-6)
    assert not math.isclose(floats.data[0].embedding[0], floats.data[1].embedding[0], rel_tol=1e-9)


def test_errors_are_openai_shaped(client: openai.OpenAI, live_server: LiveServer) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(
            model=MODEL_NAME,
            messages=[{"role": "user", "content": "hi"}],
            temperature="hot",  # type: ignore[arg-type]
        )
    assert bad.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as n:
        client.chat.completions.create(model=MODEL_NAME, messages=[{"role": "user", "content": "hi"}], n=3)
    assert n.value.param == "n"
    wrong = openai.OpenAI(base_url=live_server.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as auth:
        wrong.models.list()
    assert auth.value.code == "invalid_api_key"
