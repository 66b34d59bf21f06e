"""The official `ollama` Python client against the live server on the real model."""

from __future__ import annotations

import math

import ollama
import pytest
from runtime_e2e import API_KEY, CONTEXT, MODEL_NAME, LiveServer

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 24, "seed": 1}


@pytest.fixture
def client(live_server: LiveServer) -> ollama.Client:
    return ollama.Client(host=live_server.url, headers={"Authorization": f"Bearer {API_KEY}"})


def test_generate_non_streaming(client: ollama.Client) -> None:
    response = client.generate(model=MODEL_NAME, prompt="The capital of France is", options=GREEDY)
    assert response.done is True
    assert response.done_reason == "length"
    assert response.eval_count == 24
    assert response.prompt_eval_count >= 5
    assert response.response.strip()
    for field in ("total_duration", "prompt_eval_duration", "eval_duration"):
        value = getattr(response, field)
        assert isinstance(value, int) and value > 0, field
    assert response.total_duration >= response.eval_duration
    assert response.context and len(response.context) == response.prompt_eval_count + 24


def test_generate_streaming_matches_non_streaming(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL_NAME, prompt="Water boils at", options=GREEDY).response
    chunks = list(client.generate(model=MODEL_NAME, prompt="Water boils at", options=GREEDY, stream=True))
    assert len(chunks) > 5
    assert all(not c.done for c in chunks[:-1])
    assert chunks[-1].done and chunks[-1].done_reason == "length" and chunks[-1].eval_count == 24
    assert "".join(c.response for c in chunks) == whole


def test_greedy_is_deterministic(client: ollama.Client) -> None:
    first = client.generate(model=MODEL_NAME, prompt="Once upon a time", options=GREEDY).response
    second = client.generate(model=MODEL_NAME, prompt="Once upon a time", options=GREEDY).response
    other = client.generate(model=MODEL_NAME, prompt="In a galaxy far away", options=GREEDY).response
    third = client.generate(model=MODEL_NAME, prompt="Once upon a time", options=GREEDY).response
    assert first == second == third
    assert other != first


def test_chat_with_stop_and_streaming(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Count: one, two, three"}]
    response = client.chat(model=MODEL_NAME, messages=messages, options=GREEDY)
    assert response.message.role == "assistant"
    assert response.done and response.done_reason in {"stop", "length"}
    assert "\nUser:" not in response.message.content  # the default template's stop sequence
    chunks = list(client.chat(model=MODEL_NAME, messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == response.message.content
    assert chunks[-1].done


def test_request_stop_sequence(client: ollama.Client) -> None:
    options = {**GREEDY, "num_predict": 40}
    full = client.generate(model=MODEL_NAME, prompt="1, 2, 3, 4,", options=options, raw=True).response
    assert " 7" in full
    cut = client.generate(model=MODEL_NAME, prompt="1, 2, 3, 4,", options={**options, "stop": [" 7"]}, raw=True)
    assert cut.done_reason == "stop"
    assert cut.response == full[: full.index(" 7")]


def test_json_format_is_valid_json(client: ollama.Client) -> None:
    import json

    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    response = client.generate(
        model=MODEL_NAME,
        prompt="Describe a person as JSON:",
        format=schema,
        options={"temperature": 0, "num_predict": 60},
    )
    data = json.loads(response.response)
    assert isinstance(data["name"], str) and isinstance(data["age"], int)


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    response = client.embed(model=MODEL_NAME, input=["a cat", "a dog"])
    assert len(response.embeddings) == 2
    assert len(response.embeddings[0]) == 640
    assert math.isclose(math.fsum(x * x for x in response.embeddings[0]), 1.0, rel_tol=1e-3)
    assert response.embeddings[0] != response.embeddings[1]
    assert response.prompt_eval_count and response.prompt_eval_count >= 4
    legacy = client.embeddings(model=MODEL_NAME, prompt="a cat")
    assert len(legacy.embedding) == 640
    norm = math.sqrt(math.fsum(x * x for x in legacy.embedding))
    assert [x / norm for x in legacy.embedding] == pytest.approx(response.embeddings[0], abs=1e-4)


def test_tags_show_ps(client: ollama.Client) -> None:
    models = client.list().models
    assert [m.model for m in models] == [f"{MODEL_NAME}:latest"]
    assert models[0].details.format == "gguf"
    assert models[0].details.quantization_level == "Q4_K_M"
    assert models[0].details.family == "gemma3"
    assert models[0].size and models[0].size > 200_000_000
    assert models[0].digest == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    shown = client.show(MODEL_NAME)
    assert shown.capabilities == ["completion", "tools", "embedding"]
    assert shown.details.parameter_size == "270M"
    assert shown.modelinfo["gemma3.context_length"] == 32768
    assert f"num_ctx {CONTEXT}" in shown.parameters
    running = client.ps().models
    assert len(running) == 1 and running[0].model == f"{MODEL_NAME}:latest"


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.generate(model="llama9:70b", prompt="hi")
    assert err.value.status_code == 404
    assert "llama9:70b" in err.value.error and "not found" in err.value.error
    with pytest.raises(ollama.ResponseError) as shown:
        client.show("nope")
    assert shown.value.status_code == 404


def test_latest_tag_is_the_same_model(client: ollama.Client) -> None:
    response = client.generate(model=f"{MODEL_NAME}:latest", prompt="Hi", options={"num_predict": 2})
    assert response.done


def test_missing_or_wrong_key_is_401(live_server: LiveServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        client = ollama.Client(host=live_server.url, headers=headers)
        with pytest.raises(ollama.ResponseError) as err:
            client.list()
        assert err.value.status_code == 401


def test_pull_of_the_served_model_succeeds_and_management_is_refused(client: ollama.Client) -> None:
    assert client.pull(MODEL_NAME).status == "success"
    assert [p.status for p in client.pull(MODEL_NAME, stream=True)] == ["success"]
    with pytest.raises(ollama.ResponseError) as other:
        client.pull("llama9:70b")
    assert other.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as delete:
        client.delete(MODEL_NAME)
    assert delete.value.status_code == 403 and "slm-operator" in delete.value.error
    with pytest.raises(ollama.ResponseError) as copy:
        client.copy(MODEL_NAME, "other")
    assert copy.value.status_code == 403
