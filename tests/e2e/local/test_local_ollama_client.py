"""The official `ollama` Python client against `slm serve examples/gemma3-270m.yaml`."""

from __future__ import annotations

import math

import ollama
import pytest
from local_e2e import MODEL, SlmServe

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 16, "seed": 1}


@pytest.fixture
def client(served: SlmServe) -> ollama.Client:
    return ollama.Client(host=served.url)


def test_generate(client: ollama.Client) -> None:
    response = client.generate(model=MODEL, prompt="The capital of France is", options=GREEDY)
    assert response.done and response.done_reason == "length" and response.eval_count == 16
    assert response.response.strip()
    assert response.eval_duration is not None and response.eval_duration > 0


def test_generate_streaming_equals_non_streaming(client: ollama.Client) -> None:
    whole = client.generate(model=MODEL, prompt="Water boils at", options=GREEDY).response
    chunks = list(client.generate(model=MODEL, prompt="Water boils at", options=GREEDY, stream=True))
    assert len(chunks) > 3 and chunks[-1].done and not any(c.done for c in chunks[:-1])
    assert "".join(c.response for c in chunks) == whole


def test_chat_and_streaming_chat(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": "Name a colour."}]
    reply = client.chat(model=MODEL, messages=messages, options=GREEDY)
    assert reply.message.role == "assistant" and reply.message.content.strip()
    chunks = list(client.chat(model=MODEL, messages=messages, options=GREEDY, stream=True))
    assert "".join(c.message.content for c in chunks) == reply.message.content
    assert chunks[-1].done


def test_embed(client: ollama.Client) -> None:
    response = client.embed(model=MODEL, input=["a cat", "a dog"])
    assert len(response.embeddings) == 2 and len(response.embeddings[0]) == 640
    assert math.isclose(math.fsum(x * x for x in response.embeddings[0]), 1.0, rel_tol=1e-3)
    assert response.embeddings[0] != response.embeddings[1]


def test_list_show_ps_reflect_the_manifest(client: ollama.Client) -> None:
    [listed] = client.list().models
    assert listed.model == MODEL
    assert listed.digest == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"  # spec.model.sha256
    shown = client.show(MODEL)
    parameters = shown.parameters or ""
    # spec.parameters of examples/gemma3-270m.yaml, through the operator's render path
    for line in ("temperature 0.7", "top_k 40", "top_p 0.9", "num_ctx 2048"):
        assert line in parameters.splitlines(), (line, parameters)
    assert shown.details is not None and shown.details.family == "gemma3"
    [running] = client.ps().models
    assert running.model == MODEL and running.size is not None and running.size > 100_000_000
