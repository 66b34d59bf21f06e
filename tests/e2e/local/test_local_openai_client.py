"""The official `openai` Python client against `slm serve examples/gemma3-270m.yaml`."""

from __future__ import annotations

import openai
import pytest
from local_e2e import MODEL, SlmServe

pytestmark = pytest.mark.model


@pytest.fixture
def client(served: SlmServe) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused-locally", max_retries=0)


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_completion_and_stream(client: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "Say hi."}]
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, seed=1)  # type: ignore[arg-type]
    text = whole.choices[0].message.content
    assert text and whole.usage is not None and whole.usage.completion_tokens <= 12
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
        seed=1,
        stream=True,
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices]
    assert len(pieces) > 2 and "".join(pieces) == text


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model=MODEL, prompt="1, 2, 3,", max_tokens=8, temperature=0)
    assert completion.choices[0].text.strip() and completion.usage is not None
    assert completion.usage.completion_tokens == 8 or completion.choices[0].finish_reason == "stop"


def test_embeddings(client: openai.OpenAI) -> None:
    result = client.embeddings.create(model=MODEL, input=["hello", "world"], encoding_format="float")
    assert [len(item.embedding) for item in result.data] == [640, 640]
    assert result.data[0].embedding != result.data[1].embedding
