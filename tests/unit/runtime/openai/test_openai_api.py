"""The OpenAI API through create_app with the fake engine: completions as JSON and as SSE ending in [DONE],
usage, errors in OpenAI's shape (before and during a stream), embeddings, models."""

from __future__ import annotations

import base64
import json
import math
import struct
from typing import Any

from runtime_fast import MODEL, FastApp, serve, sse_events

from slm_runtime.engines.fake import FakeEngine

REPLY = FakeEngine().reply
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}


def test_chat_completion_whole_with_usage() -> None:
    async def scenario(app: FastApp) -> None:
        answer = (await app.client.post("/v1/chat/completions", json=CHAT)).json()
        assert answer["object"] == "chat.completion" and answer["model"] == MODEL
        choice = answer["choices"][0]
        assert choice["message"] == {"role": "assistant", "content": REPLY}
        assert choice["finish_reason"] == "stop"
        prompt_tokens = len(app.engine.started[-1].prompt)
        assert answer["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(REPLY),
            "total_tokens": prompt_tokens + len(REPLY),
            "prompt_tokens_details": {"cached_tokens": 0},  # the fake engine has no prompt cache
        }
        assert app.metric("slm_requests_total", api="openai", outcome="ok") == 1

    serve(scenario)


def test_chat_completion_streams_sse_deltas_usage_and_done() -> None:
    async def scenario(app: FastApp) -> None:
        body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
        response = await app.client.post("/v1/chat/completions", json=body)
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.text)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(event) for event in events[:-1]]
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
        assert "".join(deltas) == REPLY
        finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
        assert finish[-1] == "stop" and set(finish[:-1]) == {None}
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == len(REPLY)
        assert {c["id"] for c in chunks} == {chunks[0]["id"]}

    serve(scenario)


def test_completion_with_max_tokens_echo_and_options() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Say", "max_tokens": 4, "echo": True, "temperature": 0, "seed": 3}
        answer = (await app.client.post("/v1/completions", json=body)).json()
        assert answer["choices"][0]["text"] == "Say" + REPLY[:4]
        assert answer["choices"][0]["finish_reason"] == "length"
        params = app.engine.started[-1].params
        assert (params.max_tokens, params.temperature, params.seed) == (4, 0, 3)
        assert app.engine.started[-1].prompt == tuple(app.engine.tokenize("Say"))

    serve(scenario)


def test_completion_streams_text_chunks() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Say", "max_tokens": 6, "stream": True}
        events = sse_events((await app.client.post("/v1/completions", json=body)).text)
        chunks = [json.loads(event) for event in events[:-1]]
        assert "".join(c["choices"][0]["text"] for c in chunks) == REPLY[:6]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"

    serve(scenario)


def test_request_errors_have_openai_s_shape() -> None:
    async def scenario(app: FastApp) -> None:
        cases: list[tuple[str, dict[str, Any], int, str, str | None]] = [
            ("/v1/chat/completions", {**CHAT, "model": "other"}, 404, "model_not_found", "model"),
            ("/v1/chat/completions", {**CHAT, "n": 6}, 400, "invalid_request", "n"),  # 1 slot + 4 queued
            ("/v1/completions", {"model": MODEL, "prompt": ["a", "b"], "n": 3}, 400, "invalid_request", "n"),
            (
                "/v1/completions",
                {"model": MODEL, "prompt": "a", "n": 2, "best_of": 3},
                400,
                "invalid_request",
                "best_of",
            ),
            ("/v1/completions", {"model": MODEL, "prompt": "a", "suffix": "z"}, 400, "invalid_request", "suffix"),
            ("/v1/chat/completions", {**CHAT, "logit_bias": {"5": 1}}, 400, "invalid_request", "logit_bias"),
            ("/v1/chat/completions", {**CHAT, "audio": {"voice": "x"}}, 400, "invalid_request", "audio"),
            ("/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, 400, "invalid_request", "modalities"),
            ("/v1/chat/completions", {**CHAT, "prediction": {"type": "content"}}, 400, "invalid_request", "prediction"),
            ("/v1/chat/completions", {**CHAT, "web_search_options": {}}, 200, "", None),  # empty: nothing asked
            ("/v1/chat/completions", {**CHAT, "verbosity": "low"}, 400, "invalid_request", "verbosity"),
            ("/v1/chat/completions", {**CHAT, "reasoning_effort": "low"}, 400, "invalid_request", "reasoning_effort"),
            ("/v1/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "invalid_request", "top_logprobs"),
            ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "invalid_request", "messages"),
            (
                "/v1/chat/completions",
                {**CHAT, "response_format": {"type": "json_object"}},
                400,
                "invalid_request",
                "response_format",
            ),
            ("/v1/completions", {"model": MODEL, "prompt": []}, 400, "invalid_request", "prompt"),
        ]
        for path, body, status, code, param in cases:
            response = await app.client.post(path, json=body)
            assert response.status_code == status, (body, response.text)
            if status == 200:
                continue
            error = response.json()["error"]
            assert (error["code"], error["param"]) == (code, param), error
            assert error["message"]

    serve(scenario)


def test_an_engine_failure_midway_ends_the_stream_with_an_error_event_instead_of_done() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert response.status_code == 200
        events = sse_events(response.text)
        assert "[DONE]" not in events
        error = json.loads(events[-1])["error"]
        assert (error["type"], error["code"]) == ("server_error", "internal_error")
        deltas = [json.loads(event)["choices"][0]["delta"].get("content", "") for event in events[:-1]]
        assert "".join(deltas) == REPLY[:2]

    serve(scenario, FakeEngine(fail_after=2))


def test_embeddings_as_floats_base64_and_from_token_ids() -> None:
    async def scenario(app: FastApp) -> None:
        floats = (await app.client.post("/v1/embeddings", json={"model": MODEL, "input": ["a", "ab"]})).json()
        assert [d["index"] for d in floats["data"]] == [0, 1]
        assert floats["data"][0]["embedding"] == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
        assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
        body = {"model": MODEL, "input": "ab", "encoding_format": "base64", "dimensions": 3}
        packed = (await app.client.post("/v1/embeddings", json=body)).json()["data"][0]["embedding"]
        assert struct.unpack("<3f", base64.b64decode(packed)) == (0.0, 1.0, 1.0)
        ids = app.engine.tokenize("a", add_special=False)
        from_ids = (await app.client.post("/v1/embeddings", json={"model": MODEL, "input": ids})).json()
        assert from_ids["data"][0]["embedding"] == floats["data"][0]["embedding"]
        bad = await app.client.post("/v1/embeddings", json={"model": MODEL, "input": [[5, 99999]]})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "input"

    serve(scenario)


def test_models_list_and_lookup() -> None:
    async def scenario(app: FastApp) -> None:
        listed = (await app.client.get("/v1/models")).json()
        assert [m["id"] for m in listed["data"]] == [MODEL]
        assert (await app.client.get(f"/v1/models/{MODEL}:latest")).json()["id"] == MODEL
        missing = await app.client.get("/v1/models/other")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"

    serve(scenario)


def test_n_choices_run_at_once_with_seeds_one_apart_and_usage_counts_the_prompt_once() -> None:
    async def scenario(app: FastApp) -> None:
        answer = (await app.client.post("/v1/chat/completions", json={**CHAT, "n": 2, "seed": 7})).json()
        assert [c["index"] for c in answer["choices"]] == [0, 1]
        assert all(c["message"]["content"] == REPLY for c in answer["choices"])
        assert sorted(s.params.seed for s in app.engine.started[-2:]) == [7, 8]
        assert {s.slot for s in app.engine.started[-2:]} == {0, 1}  # each choice on its own slot
        prompt_tokens = len(app.engine.started[-1].prompt)
        assert answer["usage"] == {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 2 * len(REPLY),
            "total_tokens": prompt_tokens + 2 * len(REPLY),
            "prompt_tokens_details": {"cached_tokens": 0},
        }

    serve(scenario, parallel=2)


def test_n_choices_stream_with_their_index_each_with_its_finish() -> None:
    async def scenario(app: FastApp) -> None:
        body = {**CHAT, "n": 2, "stream": True, "stream_options": {"include_usage": True}}
        events = sse_events((await app.client.post("/v1/chat/completions", json=body)).text)
        chunks = [json.loads(e) for e in events[:-1]]
        texts = {0: "", 1: ""}
        finishes = {0: [], 1: []}  # type: dict[int, list[str]]
        for chunk in chunks:
            for choice in chunk["choices"]:
                texts[choice["index"]] += choice["delta"].get("content", "")
                if choice["finish_reason"]:
                    finishes[choice["index"]].append(choice["finish_reason"])
        assert texts == {0: REPLY, 1: REPLY} and finishes == {0: ["stop"], 1: ["stop"]}
        assert [c["choices"][0]["index"] for c in chunks[:2]] == [0, 1]  # each choice's role first, in order
        assert chunks[-1]["usage"]["completion_tokens"] == 2 * len(REPLY)

    serve(scenario, parallel=1)  # the second choice waits for the slot


def test_stop_sequences_and_max_completion_tokens_end_the_answer() -> None:
    async def scenario(app: FastApp) -> None:
        stopped = (await app.client.post("/v1/chat/completions", json={**CHAT, "stop": ["fake", "zzz"]})).json()
        assert stopped["choices"][0]["message"]["content"] == REPLY[: REPLY.index("fake")]
        assert stopped["choices"][0]["finish_reason"] == "stop"
        one = (await app.client.post("/v1/chat/completions", json={**CHAT, "stop": "from"})).json()
        assert one["choices"][0]["message"]["content"] == REPLY[: REPLY.index("from")]
        body = {**CHAT, "max_completion_tokens": 3, "max_tokens": 9}
        short = (await app.client.post("/v1/chat/completions", json=body)).json()
        assert (short["choices"][0]["message"]["content"], short["choices"][0]["finish_reason"]) == (
            REPLY[:3],
            "length",
        )
        legacy = (await app.client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})).json()
        assert legacy["usage"]["completion_tokens"] == 4

    serve(scenario)


def test_a_list_of_prompts_gets_n_choices_each_in_order() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": ["A", "BB"], "n": 2, "max_tokens": 3, "echo": True}
        answer = (await app.client.post("/v1/completions", json=body)).json()
        assert [c["text"] for c in answer["choices"]] == ["A" + REPLY[:3]] * 2 + ["BB" + REPLY[:3]] * 2
        prompts = len(app.engine.tokenize("A")) + len(app.engine.tokenize("BB"))
        assert answer["usage"]["prompt_tokens"] == prompts and answer["usage"]["completion_tokens"] == 12
        streamed = {**body, "stream": True}
        chunks = [
            json.loads(e) for e in sse_events((await app.client.post("/v1/completions", json=streamed)).text)[:-1]
        ]
        texts = ["", "", "", ""]
        for chunk in chunks:
            texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
        assert texts == ["A" + REPLY[:3]] * 2 + ["BB" + REPLY[:3]] * 2

    serve(scenario, parallel=2, max_queue=4)


def test_chat_logprobs_and_top_logprobs_whole_and_streamed() -> None:
    async def scenario(app: FastApp) -> None:
        body = {**CHAT, "logprobs": True, "top_logprobs": 3, "max_tokens": 5}
        answer = (await app.client.post("/v1/chat/completions", json=body)).json()
        content = answer["choices"][0]["logprobs"]["content"]
        assert [t["token"] for t in content] == list(REPLY[:5])
        first = content[0]
        assert first["bytes"] == list(REPLY[0].encode()) and math.isclose(first["logprob"], -math.log(2))
        tops = first["top_logprobs"]
        assert [t["token"] for t in tops] == [REPLY[0], chr(ord(REPLY[0]) + 1), chr(ord(REPLY[0]) + 2)]
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
        assert app.engine.started[-1].params.logprobs == 3
        streamed = await app.client.post("/v1/chat/completions", json={**body, "stream": True})
        chunks = [json.loads(e)["choices"][0] for e in sse_events(streamed.text)[1:-1]]
        assert [t["token"] for c in chunks if c["logprobs"] for t in c["logprobs"]["content"]] == list(REPLY[:5])
        assert all(
            "".join(t["token"] for t in c["logprobs"]["content"]) == c["delta"].get("content", "")
            for c in chunks
            if c["logprobs"]
        )
        plain = (await app.client.post("/v1/chat/completions", json={**CHAT, "logprobs": True, "max_tokens": 2})).json()
        assert [t["top_logprobs"] for t in plain["choices"][0]["logprobs"]["content"]] == [[], []]
        off = (await app.client.post("/v1/chat/completions", json=CHAT)).json()
        assert off["choices"][0]["logprobs"] is None and app.engine.started[-1].params.logprobs is None

    serve(scenario)


def test_completion_logprobs_in_the_legacy_shape() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Say", "max_tokens": 4, "logprobs": 2}
        logprobs = (await app.client.post("/v1/completions", json=body)).json()["choices"][0]["logprobs"]
        assert logprobs["tokens"] == list(REPLY[:4]) and logprobs["text_offset"] == [0, 1, 2, 3]
        assert all(math.isclose(lp, -math.log(2)) for lp in logprobs["token_logprobs"])
        assert [sorted(top) for top in logprobs["top_logprobs"]] == [sorted([c, chr(ord(c) + 1)]) for c in REPLY[:4]]
        streamed = await app.client.post("/v1/completions", json={**body, "stream": True})
        chunks = [json.loads(e)["choices"][0] for e in sse_events(streamed.text)[:-1]]
        offsets = [o for c in chunks if c["logprobs"] for o in c["logprobs"]["text_offset"]]
        assert offsets == [0, 1, 2, 3]
        echoed = await app.client.post("/v1/completions", json={**body, "echo": True})
        assert echoed.status_code == 400 and echoed.json()["error"]["param"] == "logprobs"

    serve(scenario)
