"""OpenAI API behaviour: chat and text completions (JSON or SSE ending in ``data: [DONE]``; n choices at once; tool
calls; reasoning), embeddings and models."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from slm_runtime.answers import Answer, AnswerEvent, PlainShaper, Shaper, answer_events, merged
from slm_runtime.embeddings import embed as compute_embeddings
from slm_runtime.errors import InvalidRequestError
from slm_runtime.generation import generate as run_generation
from slm_runtime.openai.encode import ChatStream, CompletionStream, Envelope, chat_choice, text_choice, usage
from slm_runtime.openai.protocol import (
    CHAT_REFUSED,
    COMPLETION_REFUSED,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    ResponseFormat,
)
from slm_runtime.openai.wire import prompt_messages, refuse, stops, tool_request
from slm_runtime.options import RequestOptions
from slm_runtime.prompts import check_token_ids, tokenize, tokenize_prompt
from slm_runtime.request_context import RequestContext, begin_request
from slm_runtime.service import ModelService
from slm_runtime.streaming import (
    ClosingStreamingResponse,
    Events,
    StreamEncoder,
    encoded,
    error_terminated,
    respond,
)
from slm_runtime.tool_chat import chat_prompt, chat_shaper, check_schemas, check_tools, forced_schema, thinking_of

__all__ = ["SSE", "chat_completions", "completions", "embeddings", "list_models", "model_card"]

SSE = "text/event-stream"

_EFFORT_THINKS: dict[str, bool | str] = {
    "none": False,
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
}


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


def _choices(total: int, service: ModelService) -> int:
    """``total`` choices, each of which takes a slot or waits in the queue for one: refused when they cannot."""
    room = service.settings.server.parallel + service.settings.server.max_queue
    if total > room:
        raise InvalidRequestError(
            f"{total} choices are more than this server can run or queue at once ({room}): lower n", param="n"
        )
    return total


def _options(
    body: ChatCompletionRequest | CompletionRequest,
    num_predict: int | None,
    *,
    json_schema: dict[str, Any] | None = None,
    extra_stop: tuple[str, ...] = (),
    logprobs: int | None = None,
) -> RequestOptions:
    """The generation options both completion requests carry."""
    return RequestOptions(
        logprobs=logprobs,
        temperature=body.temperature,
        top_p=body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        seed=body.seed,
        num_predict=num_predict,
        stop=stops(body.stop),
        json_schema=json_schema,
        extra_stop=extra_stop,
    )


def _seeded(options: RequestOptions, choice: int, service: ModelService) -> RequestOptions:
    """Choice i samples with seed + i (the request's seed, else the server's), so that choices differ."""
    seed = options.seed if options.seed is not None else service.settings.sampling.seed
    return options if seed is None or choice == 0 else replace(options, seed=seed + choice)


def _run(
    context: RequestContext,
    prompts: list[list[int]],
    options: RequestOptions,
    shaper: Callable[[], Shaper],
    n: int,
) -> Events:
    """n choices of each prompt, all at once: choice ``p * n + i`` is the i-th of prompt p."""
    service = context.service
    choices: list[AsyncGenerator[AnswerEvent, None]] = [
        answer_events(run_generation(context, tokens, _seeded(options, i, service)), shaper())
        for tokens in prompts
        for i in range(n)
    ]
    return merged(choices)


async def _answer(
    request: Request,
    events: Events,
    *,
    stream: bool,
    encoder: StreamEncoder,
    choices: int,
    whole: Callable[[list[Answer]], Response],
) -> Response:
    def streamed(admitted: Events) -> Response:
        sse = error_terminated(encoded(admitted, encoder), "openai")
        return ClosingStreamingResponse(sse, media_type=SSE, headers={"Cache-Control": "no-cache"})

    return await respond(events, request, stream=stream, streamed=streamed, whole=whole, choices=choices)


def _think(effort: str | None, supports_thinking: bool) -> bool | str | None:
    if effort is None:
        return None
    if not supports_thinking:
        raise InvalidRequestError(
            "this model's template does not think: remove reasoning_effort", param="reasoning_effort"
        )
    if effort not in _EFFORT_THINKS:
        raise InvalidRequestError(
            'reasoning_effort must be "none", "minimal", "low", "medium" or "high"', param="reasoning_effort"
        )
    return _EFFORT_THINKS[effort]


def _check_chat(body: ChatCompletionRequest) -> None:
    """400s for chat fields this server cannot honour, or that contradict each other."""
    refuse(body, CHAT_REFUSED)
    if body.modalities not in (None, ["text"]):
        raise InvalidRequestError('only the "text" modality is served', param="modalities")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")


async def chat_completions(service: ModelService, body: ChatCompletionRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "openai")
    _check_chat(body)
    n = _choices(body.n or 1, service)
    tools = tool_request(body)
    check_tools(tools)
    messages = prompt_messages(body.messages)
    response_schema = _json_schema(body.response_format)
    forced = forced_schema(tools)
    if forced is not None and response_schema is not None:
        raise InvalidRequestError(
            "response_format cannot be combined with a required or named tool call: use one", param="response_format"
        )
    engine = await context.engine()
    prompts = service.prompts
    template = prompts.template
    think = _think(body.reasoning_effort, template.capabilities.thinking)
    await check_schemas(engine, tools)
    text = chat_prompt(prompts, messages, tools, think)
    context.record.prompt_text = text
    tokens = await tokenize_prompt(engine, text)
    options = _options(
        body,
        body.max_completion_tokens or body.max_tokens,
        json_schema=forced if forced is not None else response_schema,
        extra_stop=template.stop,
        logprobs=(body.top_logprobs or 0) if body.logprobs else None,
    )
    thinks = thinking_of(template, think)
    events = _run(context, [tokens], options, lambda: chat_shaper(tools, template, thinks, text), n)
    stream = bool(body.stream)
    envelope = Envelope("chatcmpl", "chat.completion.chunk" if stream else "chat.completion", body.model)
    include_usage = bool(stream and body.stream_options and body.stream_options.include_usage)
    logprobs = bool(body.logprobs)

    def whole(answers: list[Answer]) -> Response:
        choices = [chat_choice(i, answer, logprobs=logprobs) for i, answer in enumerate(answers)]
        return JSONResponse(envelope.wrap(choices, usage=usage(answers, n)))

    encoder = ChatStream(envelope, n, include_usage, per_prompt=n, logprobs=logprobs)
    try:
        return await _answer(request, events, stream=stream, encoder=encoder, choices=n, whole=whole)
    except InvalidRequestError as err:
        if err.param == "format":  # the service speaks Ollama's name for the JSON constraint
            err.param = "tools" if forced is not None else "response_format"
        raise


async def completions(service: ModelService, body: CompletionRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "openai")
    refuse(body, COMPLETION_REFUSED)
    n = body.n or 1
    if body.best_of not in (None, n):
        raise InvalidRequestError(
            f"best_of must equal n ({n}): choosing among candidates is not supported", param="best_of"
        )
    if body.logprobs is not None and body.echo:
        raise InvalidRequestError(
            "logprobs of the echoed prompt are not supported: send echo or logprobs, not both", param="logprobs"
        )
    texts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not texts:
        raise InvalidRequestError("send at least one prompt", param="prompt")
    _choices(len(texts) * n, service)
    engine = await context.engine()
    context.record.prompt_text = texts[0]
    prompts = [await tokenize(engine, text, add_special=True) for text in texts]
    events = _run(context, prompts, _options(body, body.max_tokens, logprobs=body.logprobs), PlainShaper, n)
    stream = bool(body.stream)
    envelope = Envelope("cmpl", "text_completion", body.model)
    echoed = [text if body.echo else "" for text in texts for _ in range(n)]
    include_usage = bool(stream and body.stream_options and body.stream_options.include_usage)
    logprobs = body.logprobs is not None
    encoder = CompletionStream(envelope, len(echoed), include_usage, per_prompt=n, logprobs=logprobs, echoed=echoed)

    def whole(answers: list[Answer]) -> Response:
        choices = [text_choice(i, answer, echoed[i], logprobs=logprobs) for i, answer in enumerate(answers)]
        return JSONResponse(envelope.wrap(choices, usage=usage(answers, n)))

    return await _answer(request, events, stream=stream, encoder=encoder, choices=len(echoed), whole=whole)


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
        encoded_vector: list[float] | str = values
        if body.encoding_format == "base64":
            encoded_vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded_vector})
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
