"""The rest of the API clients use, with the official clients against the live server on the real Gemma 3 270M:
n choices, stop sequences, max_completion_tokens, Ollama's think refusal, keep_alive 0 and /api/ps.

The live server has one slot and a queue of one: n=2 runs its second choice after the first, on the same slot.
"""

from __future__ import annotations

import math
import time

import ollama
import openai
import pytest
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Tell me a short story about a fox."}]


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def ollama_client(live_server: LiveServer) -> ollama.Client:
    return ollama.Client(host=live_server.url, headers={"Authorization": f"Bearer {API_KEY}"})


def test_n_choices_with_seeds_one_apart(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_NAME, "messages": ASK, "max_tokens": 12, "temperature": 1.0, "seed": 11}
    both = client.chat.completions.create(n=2, **kwargs)  # type: ignore[call-overload]
    assert [c.index for c in both.choices] == [0, 1]
    first = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    second = client.chat.completions.create(**{**kwargs, "seed": 12})  # type: ignore[call-overload]
    assert [c.message.content for c in both.choices] == [
        first.choices[0].message.content,
        second.choices[0].message.content,
    ]
    assert both.usage is not None and first.usage is not None and second.usage is not None
    assert both.usage.prompt_tokens == first.usage.prompt_tokens  # the prompt counted once
    assert both.usage.completion_tokens == first.usage.completion_tokens + second.usage.completion_tokens


def test_n_choices_stream_with_their_index(client: openai.OpenAI) -> None:
    kwargs = {"model": MODEL_NAME, "messages": ASK, "max_tokens": 8, "temperature": 0.7, "seed": 5, "n": 2}
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    texts = {0: "", 1: ""}
    finishes: dict[int, str] = {}
    for chunk in client.chat.completions.create(**kwargs, stream=True):  # type: ignore[call-overload]
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert texts == {c.index: c.message.content for c in whole.choices}
    assert finishes == {c.index: c.finish_reason for c in whole.choices}


def test_stop_sequences_cut_the_text(client: openai.OpenAI) -> None:
    free = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0)
    assert free.choices[0].text.count(",") >= 2
    for stop in (",", [",", "9"]):
        cut = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=8, temperature=0, stop=stop)
        text = cut.choices[0].text
        assert "," not in text and free.choices[0].text.startswith(text)
        assert cut.choices[0].finish_reason == "stop"
    chat = client.chat.completions.create(model=MODEL_NAME, messages=ASK, max_tokens=24, temperature=0, stop=[" "])
    assert " " not in (chat.choices[0].message.content or "").strip()


def test_max_completion_tokens_bounds_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, max_completion_tokens=5, max_tokens=20, temperature=0
    )
    assert completion.usage is not None
    tokens, finish = completion.usage.completion_tokens, completion.choices[0].finish_reason
    assert tokens == 5 if finish == "length" else tokens < 5  # max_completion_tokens wins over max_tokens


def test_think_on_a_model_that_does_not_think_is_ollama_s_400(ollama_client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        ollama_client.chat(model=MODEL_NAME, messages=ASK, think=True)
    assert refused.value.status_code == 400
    assert refused.value.error == f'"{MODEL_NAME}" does not support thinking'
    reply = ollama_client.chat(model=MODEL_NAME, messages=ASK, think=False, options={"num_predict": 4})
    assert reply.done and reply.message.thinking is None
    assert "thinking" not in (ollama_client.show(MODEL_NAME).capabilities or [])


def test_keep_alive_zero_unloads_the_model_and_the_next_request_loads_it(ollama_client: ollama.Client) -> None:
    (running,) = ollama_client.ps().models
    assert running.size_vram == 0  # on the CPU
    reply = ollama_client.generate(model=MODEL_NAME, prompt="Hi", keep_alive=0, options={"num_predict": 2})
    assert reply.done
    deadline = time.monotonic() + 10
    while ollama_client.ps().models and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ollama_client.ps().models == []
    assert [m.model for m in ollama_client.list().models] == [f"{MODEL_NAME}:latest"]  # still served
    again = ollama_client.generate(model=MODEL_NAME, prompt="Hi", options={"num_predict": 2})
    assert again.done and again.eval_count == 2
    assert len(ollama_client.ps().models) == 1
    unloaded = ollama_client.generate(model=MODEL_NAME, keep_alive=0)
    assert unloaded.done_reason == "unload"
    loaded = ollama_client.generate(model=MODEL_NAME)  # an empty request loads it, for the tests after this one
    assert loaded.done_reason == "load" and len(ollama_client.ps().models) == 1


def test_chat_logprobs_describe_the_generated_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    tokens = choice.logprobs.content
    assert len(tokens) == completion.usage.completion_tokens  # type: ignore[union-attr]
    assert b"".join(bytes(t.bytes or []) for t in tokens).decode() == choice.message.content
    for token in tokens:
        assert token.logprob <= 0 and len(token.top_logprobs) == 3
        assert [t.logprob for t in token.top_logprobs] == sorted((t.logprob for t in token.top_logprobs), reverse=True)
        assert token.logprob <= token.top_logprobs[0].logprob + 1e-6  # the model's distribution, before sampling
        ranked = [t.logprob for t in token.top_logprobs if t.token == token.token]
        assert all(math.isclose(lp, token.logprob, abs_tol=1e-6) for lp in ranked)
    streamed = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3, stream=True
    )
    seen = [
        t
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs
        for t in chunk.choices[0].logprobs.content or []
    ]
    assert [(t.token, round(t.logprob, 4)) for t in seen] == [(t.token, round(t.logprob, 4)) for t in tokens]


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL_NAME, prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens and logprobs.token_logprobs and logprobs.top_logprobs
    assert "".join(logprobs.tokens) == completion.choices[0].text
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(len(logprobs.tokens))]
    assert all(len(top) <= 2 and all(lp <= 0 for lp in top.values()) for top in logprobs.top_logprobs)
    assert all(lp <= 0 for lp in logprobs.token_logprobs)
