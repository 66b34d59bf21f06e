"""The Ollama API through create_app with the fake engine: shapes of JSON and NDJSON answers, options reaching the
engine, errors in Ollama's shape (before and during a stream), embeddings, model listing."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from typing import Any

import pytest
from runtime_fast import MODEL, FastApp, serve

from slm_runtime.engines.base import ModelInfo
from slm_runtime.engines.fake import BOS, FakeEngine

REPLY = FakeEngine().reply


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_generate_whole_answer_with_ollama_counters_and_context() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False})
        assert response.status_code == 200
        body = response.json()
        assert body["response"] == REPLY
        assert (body["done"], body["done_reason"]) == (True, "stop")
        prompt = app.engine.tokenize("Hi")
        assert body["prompt_eval_count"] == len(prompt)
        assert body["eval_count"] == len(REPLY)
        assert body["context"] == prompt + app.engine.tokenize(REPLY, add_special=False)
        assert body["total_duration"] >= body["eval_duration"] > 0
        assert app.engine.started[-1].prompt == tuple(prompt)
        assert app.metric("slm_requests_total", api="ollama", outcome="ok") == 1
        assert app.metric("slm_generation_tokens_total", api="ollama") == len(REPLY)

    serve(scenario)


def test_generate_streams_ndjson_chunks_then_a_final_one() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
        assert response.headers["content-type"] == "application/x-ndjson"
        chunks = lines(response.text)
        assert all(chunk["done"] is False for chunk in chunks[:-1])
        assert "".join(chunk["response"] for chunk in chunks) == REPLY
        assert len(chunks) == len(REPLY) + 1
        final = chunks[-1]
        assert (final["done"], final["done_reason"], final["eval_count"]) == (True, "stop", len(REPLY))

    serve(scenario)


def test_options_reach_the_engine_and_num_predict_ends_with_length() -> None:
    async def scenario(app: FastApp) -> None:
        options = {"num_predict": 5, "temperature": 0.25, "top_k": 7, "seed": 42}
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": options}
        answer = (await app.client.post("/api/generate", json=body)).json()
        assert (answer["response"], answer["done_reason"]) == (REPLY[:5], "length")
        params = app.engine.started[-1].params
        assert (params.max_tokens, params.temperature, params.top_k, params.seed) == (5, 0.25, 7, 42)

    serve(scenario)


def test_a_stop_sequence_cuts_the_answer() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"stop": ["fake"]}}
        answer = (await app.client.post("/api/generate", json=body)).json()
        assert (answer["response"], answer["done_reason"]) == (REPLY[: REPLY.index("fake")], "stop")

    serve(scenario)


def test_a_context_carried_over_is_continued_without_the_template() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": " more", "context": [BOS, 75], "stream": False}
        assert (await app.client.post("/api/generate", json=body)).status_code == 200
        assert app.engine.started[-1].prompt == (BOS, 75, *app.engine.tokenize(" more", add_special=False))
        bad = {**body, "context": [BOS, 10_000]}
        response = await app.client.post("/api/generate", json=bad)
        assert response.status_code == 400
        assert "context[1] = 10000 is not a token id" in response.json()["error"]

    serve(scenario)


def test_chat_streams_assistant_messages_with_the_system_prompt_applied() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        chunks = lines((await app.client.post("/api/chat", json=body)).text)
        assert {chunk["message"]["role"] for chunk in chunks} == {"assistant"}
        assert "".join(chunk["message"]["content"] for chunk in chunks) == REPLY
        assert chunks[-1]["done"] is True
        prompt = app.engine.detokenize(app.engine.started[-1].prompt)
        assert prompt == "Be a fake.\n\nUser: Hi\nAssistant:"

    serve(scenario, system="Be a fake.")


def test_an_empty_prompt_or_chat_only_loads_the_model() -> None:
    async def scenario(app: FastApp) -> None:
        generate = (await app.client.post("/api/generate", json={"model": MODEL})).json()
        chat = (await app.client.post("/api/chat", json={"model": MODEL, "messages": []})).json()
        assert (generate["done_reason"], generate["response"]) == ("load", "")
        assert (chat["done_reason"], chat["message"]) == ("load", {"role": "assistant", "content": ""})
        assert len(app.engine.started) == 1  # only the warm-up generated

    serve(scenario)


def test_request_errors_have_ollama_s_shape_and_status() -> None:
    async def scenario(app: FastApp) -> None:
        cases: list[tuple[str, dict[str, Any], int, str]] = [
            ("/api/generate", {"model": "other", "prompt": "Hi"}, 404, 'model "other" not found'),
            ("/api/generate", {"model": "", "prompt": "Hi"}, 400, "model is required"),
            ("/api/generate", {"model": MODEL, "prompt": "Hi", "suffix": "x"}, 400, "suffix"),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "wizard"}]}, 400, "messages[0]"),
            ("/api/generate", {"model": MODEL, "prompt": "Hi", "format": "json"}, 400, "cannot constrain"),
            ("/api/delete", {"model": MODEL}, 403, "delete is not supported"),
        ]
        for path, body, status, message in cases:
            method = "DELETE" if path == "/api/delete" else "POST"
            response = await app.client.request(method, path, json=body)
            assert response.status_code == status, (path, body, response.text)
            assert set(response.json()) == {"error"}
            assert message in response.json()["error"], (message, response.json())

    serve(scenario)


def test_an_engine_failure_midway_ends_the_stream_with_an_error_line() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi"})
        assert response.status_code == 200
        chunks = lines(response.text)
        assert "".join(chunk.get("response", "") for chunk in chunks[:-1]) == REPLY[:3]
        assert chunks[-1] == {"error": "internal error: FakeEngineError"}
        assert app.metric("slm_requests_total", api="ollama", outcome="error") == 1
        assert app.service.scheduler.running == 0

    serve(scenario, FakeEngine(fail_after=3))


def test_a_failure_without_streaming_is_a_500() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False})
        assert (response.status_code, response.json()) == (500, {"error": "internal error: FakeEngineError"})

    serve(scenario, FakeEngine(fail_after=3))


def test_embed_normalizes_and_cuts_while_embeddings_returns_the_raw_vector() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "input": ["ab", "a"], "dimensions": 4}
        answer = (await app.client.post("/api/embed", json=body)).json()
        first, second = answer["embeddings"]
        assert len(first) == 4 and math.isclose(sum(x * x for x in first), 1.0)
        assert second == [0.0, 1.0, 0.0, 0.0]
        assert answer["prompt_eval_count"] == 5
        legacy = (await app.client.post("/api/embeddings", json={"model": MODEL, "prompt": "a"})).json()
        assert legacy == {"embedding": [0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]}
        assert app.metric("slm_requests_total", api="ollama", outcome="ok") == 2

    serve(scenario)


def test_an_input_longer_than_the_context_is_refused_unless_truncated() -> None:
    async def scenario(app: FastApp) -> None:
        long = "x" * 100
        refused = await app.client.post("/api/embed", json={"model": MODEL, "input": long, "truncate": False})
        assert refused.status_code == 400 and "longer than the context length of 64" in refused.json()["error"]
        cut = await app.client.post("/api/embed", json={"model": MODEL, "input": long})
        assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 63

    serve(scenario, FakeEngine(context_length=64))


def test_embeddings_turned_off_are_refused() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/embed", json={"model": MODEL, "input": "a"})
        assert response.status_code == 400 and "does not support embeddings" in response.json()["error"]
        show = (await app.client.post("/api/show", json={"model": MODEL})).json()
        assert show["capabilities"] == ["completion", "tools"]

    serve(scenario, FakeEngine(embeddings=False))


def test_tags_show_ps_and_version_describe_the_one_served_model() -> None:
    async def scenario(app: FastApp) -> None:
        tags = (await app.client.get("/api/tags")).json()
        assert [m["name"] for m in tags["models"]] == [f"{MODEL}:latest"]
        assert tags["models"][0]["details"]["format"] == "gguf"
        show = (await app.client.post("/api/show", json={"model": f"{MODEL}:latest"})).json()
        assert show["capabilities"] == ["completion", "tools", "embedding"]
        assert 'stop "\nUser:"' in show["parameters"]
        assert show["system"] == "Be a fake."
        ps = (await app.client.get("/api/ps")).json()
        assert ps["models"][0]["context_length"] == app.engine.info.context_length
        assert (await app.client.get("/api/version")).json()["version"]
        pulled = await app.client.post("/api/pull", json={"model": MODEL, "stream": False})
        assert pulled.json() == {"status": "success"}

    serve(scenario, system="Be a fake.")


class SizedFake(FakeEngine):
    """The fake engine with a model file of 4 KiB."""

    @property
    def info(self) -> ModelInfo:
        return replace(super().info, size_bytes=4096)


@pytest.mark.parametrize(("gpu_layers", "vram"), [(0, 0), (-1, 4096), (999, 4096)])
def test_size_vram_is_the_model_s_size_when_its_layers_are_offloaded(gpu_layers: int, vram: int) -> None:
    async def scenario(app: FastApp) -> None:
        (model,) = (await app.client.get("/api/ps")).json()["models"]
        assert (model["size"], model["size_vram"]) == (4096, vram)

    serve(scenario, SizedFake(), gpu_layers=gpu_layers)


def test_a_prompt_longer_than_the_context_is_truncated_unless_truncate_is_false() -> None:
    async def scenario(app: FastApp) -> None:
        for path, body in (
            ("/api/generate", {"model": MODEL, "prompt": "x" * 100, "stream": False}),
            ("/api/chat", {"model": MODEL, "messages": [{"role": "user", "content": "x" * 100}], "stream": False}),
        ):
            cut = await app.client.post(path, json=body)
            assert cut.status_code == 200 and cut.json()["prompt_eval_count"] == 48, path  # 3/4 of the context
            refused = await app.client.post(path, json={**body, "truncate": False})
            assert refused.status_code == 400 and "longer than the context length of 64" in refused.json()["error"]

    serve(scenario, FakeEngine(context_length=64))


def test_options_and_fields_that_cannot_be_honoured_are_400s_naming_them() -> None:
    async def scenario(app: FastApp) -> None:
        for fields, named in (
            ({"options": {"num_gpu": 20}}, "options.num_gpu"),
            ({"options": {"num_batch": 8}}, "options.num_batch"),
            ({"options": {"typical_p": 0.5}}, "options.typical_p"),
            ({"options": {"num_keep": 4}}, "options.num_keep"),
            ({"shift": True}, "shift"),
            ({"images": ["aGk="]}, "images"),
        ):
            body = {"model": MODEL, "prompt": "Hi", "stream": False, **fields}
            response = await app.client.post("/api/generate", json=body)
            assert response.status_code == 400 and named in response.json()["error"], (fields, response.text)
        for path, body in (
            ("/api/embed", {"model": MODEL, "input": "a", "options": {"num_gpu": 20}}),
            ("/api/embeddings", {"model": MODEL, "prompt": "a", "options": {"typical_p": 0.5}}),
        ):
            response = await app.client.post(path, json=body)
            assert response.status_code == 400 and "options." in response.json()["error"], path
        same = {"num_gpu": 0, "num_batch": app.settings.engine.batch_size, "typical_p": 1.0, "num_ctx": 32}
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": same, "shift": False}
        assert (await app.client.post("/api/generate", json=body)).status_code == 200

    serve(scenario)


def test_logprobs_in_ollama_s_shape_whole_and_streamed() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Hi", "stream": False, "logprobs": True, "top_logprobs": 2}
        body["options"] = {"num_predict": 3}
        whole = (await app.client.post("/api/generate", json=body)).json()
        assert [t["token"] for t in whole["logprobs"]] == list(REPLY[:3])
        assert math.isclose(whole["logprobs"][0]["logprob"], -math.log(2))
        assert [t["token"] for t in whole["logprobs"][0]["top_logprobs"]] == [REPLY[0], chr(ord(REPLY[0]) + 1)]
        chat = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "logprobs": True, **body}
        chunks = lines((await app.client.post("/api/chat", json={**chat, "stream": True})).text)
        assert [t["token"] for c in chunks for t in c["logprobs"]] == list(REPLY[:3])
        assert all("".join(t["token"] for t in c["logprobs"]) == c["message"]["content"] for c in chunks)
        plain = (await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False})).json()
        assert "logprobs" not in plain
        lonely = {"model": MODEL, "prompt": "Hi", "top_logprobs": 2}
        assert (await app.client.post("/api/generate", json=lonely)).status_code == 400

    serve(scenario)
