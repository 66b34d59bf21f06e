"""The CLI's HTTP client: server URLs as Ollama reads them, NDJSON streaming, errors with the server's message."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from slm_operator.local.client import ClientError, LocalClient, server_url


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        (None, {}, "http://127.0.0.1:11434"),
        (None, {"OLLAMA_HOST": "0.0.0.0:8080"}, "http://0.0.0.0:8080"),
        (":9000", {}, "http://127.0.0.1:9000"),
        ("https://models.example.com/", {"OLLAMA_HOST": "x:1"}, "https://models.example.com"),
    ],
)
def test_server_url(value: str | None, env: dict[str, str], expected: str) -> None:
    assert server_url(value, env) == expected


def _handler(request: httpx.Request) -> httpx.Response:
    assert request.headers.get("authorization") == "Bearer k"
    if request.url.path == "/api/chat":
        body = json.loads(request.content)
        assert body["stream"] is True and body["options"] == {"temperature": 0}
        lines = [
            {"message": {"role": "assistant", "content": "Bon"}, "done": False},
            {"message": {"role": "assistant", "content": "jour"}, "done": False},
            {"message": {"role": "assistant", "content": ""}, "done": True, "eval_count": 2},
        ]
        return httpx.Response(200, text="\n".join(json.dumps(line) for line in lines) + "\n")
    if request.url.path == "/api/generate":
        return httpx.Response(200, text=json.dumps({"error": "the model crashed"}) + "\n")
    if request.url.path == "/api/ps":
        return httpx.Response(200, json={"models": [{"name": "m:latest"}]})
    return httpx.Response(404, json={"error": "model 'x' not found"})


def test_streaming_chat_and_errors() -> None:
    client = LocalClient("http://server", api_key="k", transport=httpx.MockTransport(_handler))
    chunks = list(client.chat("m", [{"role": "user", "content": "hi"}], {"temperature": 0}))
    assert [c.text for c in chunks] == ["Bon", "jour", ""]
    assert chunks[-1].done and chunks[-1].stats["eval_count"] == 2
    assert client.loaded() == [{"name": "m:latest"}]
    with pytest.raises(ClientError, match="/api/generate: the model crashed"):
        list(client.generate("m", "hi"))
    with pytest.raises(ClientError, match="/api/show: HTTP 404: model 'x' not found"):
        client.show("x")


def test_unreachable_server_says_what_to_do() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = LocalClient("http://127.0.0.1:1", transport=httpx.MockTransport(refuse))
    with pytest.raises(
        ClientError, match=re.escape("cannot reach http://127.0.0.1:1: connection refused; is `slm serve`")
    ):
        client.loaded()
    assert client.ready() is False and client.reachable() is False
