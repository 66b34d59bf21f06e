"""OpenAI API behaviour: chat and text completions (JSON or SSE ending in ``data: [DONE]``), embeddings."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from slm_runtime import __version__
from slm_runtime.embeddings import embed as compute_embeddings
from slm_runtime.errors import InvalidRequestError
from slm_runtime.generation import GenerationDone, GenerationEvent
from slm_runtime.generation import generate as run_generation
from slm_runtime.openai.protocol import (
    ChatCompletionRequest,
    ChatMessage,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
)
from slm_runtime.options import RequestOptions
from slm_runtime.prompts import ChatMessage as PromptMessage
from slm_runtime.prompts import check_token_ids, tokenize_prompt
from slm_runtime.request_context import begin_request
from slm_runtime.service import ModelService
from slm_runtime.streaming import ClosingStreamingResponse, encoded, error_terminated, respond

__all__ = ["SSE", "chat_completions", "completions", "embeddings", "list_models", "model_card"]

SSE = "text/event-stream"
FINGERPRINT = f"slm-runtime-{__version__}"


def _json_schema(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return {}
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise InvalidRequestError(
            'response_format of type "json_schema" needs json_schema.schema', param="response_format.json_schema"
        )
    return fmt.json_schema.schema_


def _stops(stop: str | list[str] | None) -> tuple[str, ...] | None:
    if stop is None:
        return None
    return (stop,) if isinstance(stop, str) else tuple(stop)


def _check_n(n: int | None) -> None:
    if n is not None and n != 1:
        raise InvalidRequestError("only n=1 is supported: one choice per request", param="n")


def _text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part_index, part in enumerate(message.content):
        if part.type != "text":
            raise InvalidRequestError(
                f'content parts of type "{part.type}" are not supported: send text',
                param=f"messages[{index}].content[{part_index}].type",
            )
        parts.append(part.text or "")
    return "".join(parts)


def _usage(done: GenerationDone) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _options(
    body: ChatCompletionRequest | CompletionRequest,
    num_predict: int | None,
    *,
    json_schema: dict[str, Any] | None = None,
    extra_stop: tuple[str, ...] = (),
) -> RequestOptions:
    """The generation options both completion requests carry."""
    return RequestOptions(
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        num_predict=num_predict,
        stop=_stops(body.stop),
        json_schema=json_schema,
        extra_stop=extra_stop,
    )


async def _respond(
    request: Request,
    events: AsyncGenerator[GenerationEvent, None],
    body: ChatCompletionRequest | CompletionRequest,
    *,
    chat: bool,
    prefix: str = "",
) -> Response:
    stream = bool(body.stream)
    include_usage = bool(stream and body.stream_options and body.stream_options.include_usage)
    kind, whole_object = ("chatcmpl", "chat.completion") if chat else ("cmpl", "text_completion")
    base = {
        "id": f"{kind}-{uuid.uuid4().hex}",
        "object": f"{whole_object}.chunk" if stream and chat else whole_object,
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(payload: dict[str, Any], finish: str | None) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": finish}
        choice.update({"delta": payload} if chat else payload)
        out = {**base, "choices": [choice]}
        if include_usage:
            out["usage"] = None
        return out

    def delta(text: str) -> bytes:
        return _sse(chunk({"content": text} if chat else {"text": text}, None))

    def done(end: GenerationDone) -> bytes:
        finish = _sse(chunk({} if chat else {"text": ""}, end.done_reason))
        return finish + _sse({**base, "choices": [], "usage": _usage(end)}) if include_usage else finish

    def streamed(admitted: AsyncGenerator[GenerationEvent, None]) -> Response:
        head = _sse(chunk({"role": "assistant", "content": ""}, None)) if chat else b""
        sse = encoded(admitted, text=delta, done=done, head=head, tail=b"data: [DONE]\n\n")
        return ClosingStreamingResponse(
            error_terminated(sse, "openai"), media_type=SSE, headers={"Cache-Control": "no-cache"}
        )

    def whole(text: str, done: GenerationDone) -> Response:
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": done.done_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": prefix + text}
        else:
            choice["text"] = prefix + text
        return JSONResponse({**base, "choices": [choice], "usage": _usage(done)})

    return await respond(events, request, stream=stream, streamed=streamed, whole=whole)


async def chat_completions(service: ModelService, body: ChatCompletionRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "openai")
    _check_n(body.n)
    if body.logprobs:
        raise InvalidRequestError("logprobs are not supported", param="logprobs")
    if body.tools:
        raise InvalidRequestError(f"{body.model} does not support tools", param="tools")
    messages = [
        PromptMessage("system" if m.role == "developer" else m.role, _text_of(m, i))
        for i, m in enumerate(body.messages)
    ]
    engine = await context.engine()
    prompts = service.prompts
    text = prompts.chat(messages)
    context.record.prompt_text = text
    tokens = await tokenize_prompt(engine, text)
    options = _options(
        body,
        body.max_completion_tokens or body.max_tokens,
        json_schema=_json_schema(body.response_format),
        extra_stop=prompts.template.stop,
    )
    try:
        return await _respond(request, run_generation(context, tokens, options), body, chat=True)
    except InvalidRequestError as err:
        if err.param == "format":  # the service speaks Ollama's name for the JSON constraint
            err.param = "response_format"
        raise


async def completions(service: ModelService, body: CompletionRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "openai")
    _check_n(body.n)
    if body.best_of not in (None, 1):
        raise InvalidRequestError("only best_of=1 is supported", param="best_of")
    if body.logprobs:
        raise InvalidRequestError("logprobs are not supported", param="logprobs")
    if body.suffix:
        raise InvalidRequestError("suffix (fill in the middle) is not supported", param="suffix")
    if isinstance(body.prompt, list):
        if len(body.prompt) != 1:
            raise InvalidRequestError("send exactly one prompt per request", param="prompt")
        prompt = body.prompt[0]
    else:
        prompt = body.prompt
    engine = await context.engine()
    context.record.prompt_text = prompt
    tokens = await asyncio.to_thread(engine.tokenize, prompt, add_special=True)
    events = run_generation(context, tokens, _options(body, body.max_tokens))
    return await _respond(request, events, body, chat=False, prefix=prompt if body.echo else "")


async def embeddings(service: ModelService, body: EmbeddingRequest, request: Request) -> JSONResponse:
    context = begin_request(service, request, body.model, "openai")
    raw = body.input
    texts: list[str]
    if isinstance(raw, str):
        texts = [raw]
    elif raw and all(isinstance(x, int) for x in raw):
        engine = await context.engine()
        check_token_ids(engine, raw, "input")  # type: ignore[arg-type]
        texts = [await asyncio.to_thread(engine.detokenize, raw)]  # type: ignore[arg-type]
    elif raw and all(isinstance(x, list) for x in raw):
        engine = await context.engine()
        for ids in raw:
            check_token_ids(engine, ids, "input")  # type: ignore[arg-type]
        texts = [await asyncio.to_thread(engine.detokenize, ids) for ids in raw]  # type: ignore[arg-type]
    else:
        texts = [str(x) for x in raw]
    if not texts:
        raise InvalidRequestError("input must not be empty", param="input")
    result = await compute_embeddings(context, texts, truncate=False)
    data = []
    for index, vector in enumerate(result.vectors):
        values = vector[: body.dimensions] if body.dimensions else vector
        encoded: list[float] | str = values
        if body.encoding_format == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = sum(result.token_counts)
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": body.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def model_card(service: ModelService) -> dict[str, Any]:
    created = int(service.loaded_at.timestamp()) if service.loaded_at else int(time.time())
    return {"id": service.name, "object": "model", "created": created, "owned_by": "slm-runtime"}


def list_models(service: ModelService) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(service)]}
