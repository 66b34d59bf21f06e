"""Ollama API behaviour: requests in, NDJSON or JSON out, in Ollama's shapes and field names."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from slm_runtime import __version__
from slm_runtime.answers import Answer, PlainShaper, Shaper, answer_events, merged
from slm_runtime.embeddings import embed as compute_embeddings
from slm_runtime.engines.base import ModelInfo
from slm_runtime.errors import InvalidRequestError, OperationNotSupportedError
from slm_runtime.generation import GenerationEvent
from slm_runtime.generation import generate as run_generation
from slm_runtime.ollama.encode import ChatStream, GenerateStream, chat_whole, generate_whole
from slm_runtime.ollama.protocol import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    Format,
    GenerateRequest,
    Options,
    PullRequest,
    ShowRequest,
)
from slm_runtime.ollama.wire import (
    check_options,
    check_shift,
    check_think,
    keep_alive_seconds,
    prompt_messages,
    tool_request,
)
from slm_runtime.options import RequestOptions
from slm_runtime.prompts import check_token_ids, tokenize, tokenize_prompt
from slm_runtime.request_context import begin_request
from slm_runtime.service import ModelService
from slm_runtime.settings import EngineSettings
from slm_runtime.streaming import (
    ClosingStreamingResponse,
    Events,
    StreamEncoder,
    encoded,
    error_terminated,
    respond,
    rfc3339_now,
)
from slm_runtime.tool_chat import ToolRequest, chat_prompt, chat_shaper, check_tools, thinking_of

__all__ = [
    "NDJSON",
    "chat",
    "embed",
    "embeddings",
    "generate",
    "ps",
    "pull",
    "request_options",
    "show",
    "tags",
    "unsupported",
    "version",
    "vram_bytes",
]

NDJSON = "application/x-ndjson"


def format_schema(fmt: Format) -> dict[str, Any] | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return {}
    assert isinstance(fmt, dict)
    return fmt


def request_options(
    options: Options | None,
    fmt: Format,
    truncate: bool | None,
    extra_stop: tuple[str, ...],
    logprobs: int | None = None,
) -> RequestOptions:
    """The generation options of a request; ``truncate`` defaults to true, as Ollama's."""
    o = options or Options()
    num_predict = o.num_predict
    if num_predict is not None and num_predict < -1:
        num_predict = -1  # -2 means "fill the context" in Ollama
    return RequestOptions(
        temperature=o.temperature,
        top_k=o.top_k,
        top_p=o.top_p,
        min_p=o.min_p,
        repeat_penalty=o.repeat_penalty,
        repeat_last_n=o.repeat_last_n,
        presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty,
        seed=o.seed,
        num_predict=num_predict,
        num_ctx=o.num_ctx,
        stop=tuple(o.stop) if o.stop is not None else None,
        json_schema=format_schema(fmt),
        truncate=truncate is not False,
        extra_stop=extra_stop,
        logprobs=logprobs,
    )


def _logprobs(logprobs: bool | None, top_logprobs: int | None) -> int | None:
    """How many likely tokens to report at each step (None: no log-probabilities)."""
    if top_logprobs is not None and not logprobs:
        raise InvalidRequestError("top_logprobs needs logprobs: true", param="top_logprobs")
    return (top_logprobs or 0) if logprobs else None


def _reject_images(images: list[str] | None, param: str) -> None:
    if images:
        raise InvalidRequestError("this model does not support images: remove them", param=param)


def _load_response(model: str, chat: bool, reason: str = "load") -> JSONResponse:
    """The answer to a request without a prompt: it loads the model ("load"), or with keep_alive 0 unloads it
    ("unload"), as Ollama's."""
    body: dict[str, Any] = {"model": model, "created_at": rfc3339_now(), "done": True, "done_reason": reason}
    if chat:
        body["message"] = {"role": "assistant", "content": ""}
    else:
        body["response"] = ""
    return JSONResponse(body)


async def _answer(
    request: Request,
    events: AsyncGenerator[GenerationEvent, None],
    shaper: Shaper,
    *,
    stream: bool,
    encoder: StreamEncoder,
    whole: Callable[[Answer], dict[str, Any]],
) -> Response:
    """The response to one generation read through ``shaper``: NDJSON chunks, or one JSON answer."""

    def streamed(admitted: Events) -> Response:
        return ClosingStreamingResponse(error_terminated(encoded(admitted, encoder), "ollama"), media_type=NDJSON)

    def whole_answer(answers: list[Answer]) -> Response:
        return JSONResponse(whole(answers[0]))

    answers = merged([answer_events(events, shaper)])
    return await respond(answers, request, stream=stream, streamed=streamed, whole=whole_answer)


async def generate(service: ModelService, body: GenerateRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "ollama")
    _reject_images(body.images, "images")
    if body.suffix:
        raise InvalidRequestError("suffix (fill in the middle) is not supported by this server", param="suffix")
    check_shift(body.shift)
    check_options(body.options, service.settings.engine)
    if not body.prompt and not body.context and keep_alive_seconds(body.keep_alive) == 0 and service.residency.honours:
        return _load_response(body.model, chat=False, reason="unload")
    engine = await context.engine()
    load_ns = context.elapsed_ns()  # time spent waiting for the model to load
    if not body.prompt and not body.context:
        return _load_response(body.model, chat=False)
    prompts = service.prompts
    own_template = not (body.raw or body.template)
    think = check_think(body.think, body.model, own_template and prompts.template.capabilities.thinking)
    text = prompts.generate(body.prompt, body.system, body.template, body.raw, first_turn=not body.context)
    context.record.prompt_text = body.prompt
    if body.context:
        check_token_ids(engine, body.context, "context")
        tokens = [*body.context, *(await tokenize(engine, text, add_special=False))]
    else:
        tokens = await tokenize_prompt(engine, text)
    stops = prompts.generate_stops(body.template, body.raw)
    logprobs = _logprobs(body.logprobs, body.top_logprobs)
    options = request_options(body.options, body.format, body.truncate, stops, logprobs)
    encoder = GenerateStream(body.model, load_ns, logprobs is not None, with_context=not body.raw)
    return await _answer(
        request,
        run_generation(context, tokens, options),
        chat_shaper(ToolRequest(), prompts.template, thinking_of(prompts.template, think), text)
        if own_template
        else PlainShaper(),
        stream=body.stream,
        encoder=encoder,
        whole=lambda answer: generate_whole(encoder, answer),
    )


async def chat(service: ModelService, body: ChatRequest, request: Request) -> Response:
    context = begin_request(service, request, body.model, "ollama")
    messages = prompt_messages(body.messages)
    tools = tool_request(body.tools)
    check_tools(tools)
    check_shift(body.shift)
    check_options(body.options, service.settings.engine)
    if not body.messages and keep_alive_seconds(body.keep_alive) == 0 and service.residency.honours:
        return _load_response(body.model, chat=True, reason="unload")
    engine = await context.engine()
    load_ns = context.elapsed_ns()  # time spent waiting for the model to load
    if not body.messages:
        return _load_response(body.model, chat=True)
    prompts = service.prompts
    template = prompts.template
    think = check_think(body.think, body.model, template.capabilities.thinking)
    text = chat_prompt(prompts, messages, tools, think)
    context.record.prompt_text = text
    tokens = await tokenize_prompt(engine, text)
    logprobs = _logprobs(body.logprobs, body.top_logprobs)
    options = request_options(body.options, body.format, body.truncate, template.stop, logprobs)
    encoder = ChatStream(body.model, load_ns, logprobs is not None)
    return await _answer(
        request,
        run_generation(context, tokens, options),
        chat_shaper(tools, template, thinking_of(template, think), text),
        stream=body.stream,
        encoder=encoder,
        whole=lambda answer: chat_whole(encoder, answer),
    )


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else vector


async def embed(service: ModelService, body: EmbedRequest, request: Request) -> JSONResponse:
    context = begin_request(service, request, body.model, "ollama")
    check_options(body.options, service.settings.engine)
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    result = await compute_embeddings(context, texts, truncate=body.truncate)
    vectors = [_normalize(v[: body.dimensions] if body.dimensions else v) for v in result.vectors]
    return JSONResponse(
        {
            "model": body.model,
            "embeddings": vectors,
            "total_duration": context.elapsed_ns(),
            "load_duration": 0,
            "prompt_eval_count": sum(result.token_counts),
        }
    )


async def embeddings(service: ModelService, body: EmbeddingsRequest, request: Request) -> JSONResponse:
    context = begin_request(service, request, body.model, "ollama")
    check_options(body.options, service.settings.engine)
    result = await compute_embeddings(context, [body.prompt], truncate=True)
    return JSONResponse({"embedding": result.vectors[0]})


def pull(service: ModelService, body: PullRequest) -> Response:
    """The served model is always present: a pull of it succeeds at once; any other model is not found."""
    service.check_model(body.model or body.name)
    if body.stream:
        return Response(json.dumps({"status": "success"}) + "\n", media_type=NDJSON)
    return JSONResponse({"status": "success"})


def unsupported(operation: str) -> OperationNotSupportedError:
    return OperationNotSupportedError(
        f"{operation} is not supported: this server serves one model, managed by slm-operator "
        "(change spec.model of the SLMDeployment instead)"
    )


def version() -> dict[str, str]:
    return {"version": __version__}


def _tag_name(name: str) -> str:
    return name if ":" in name else f"{name}:latest"


def _details(service: ModelService) -> dict[str, Any]:
    info = service.info
    return {
        "parent_model": "",
        "format": info.format,
        "family": info.family,
        "families": [info.family] if info.family else None,
        "parameter_size": info.parameter_size,
        "quantization_level": info.quantization,
    }


def _modified_at(service: ModelService) -> str:
    path = service.settings.model.model
    try:
        stamp = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    except OSError:
        stamp = service.loaded_at or datetime.now(UTC)
    return stamp.isoformat().replace("+00:00", "Z")


def _digest(service: ModelService) -> str:
    return (service.settings.model.model_digest or "").removeprefix("sha256:")


def tags(service: ModelService) -> dict[str, Any]:
    if not service.ready:
        return {"models": []}
    name = _tag_name(service.name)
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "modified_at": _modified_at(service),
                "size": service.info.size_bytes,
                "digest": _digest(service),
                "details": _details(service),
            }
        ]
    }


def _parameters_text(service: ModelService) -> str:
    s = service.settings.sampling
    lines = [
        f"temperature {s.temperature:g}",
        f"top_k {s.top_k}",
        f"top_p {s.top_p:g}",
        f"repeat_penalty {s.repeat_penalty:g}",
        f"num_ctx {service.info.context_length}",
    ]
    lines += [f'stop "{stop}"' for stop in (*s.stop, *service.prompts.template.stop)]
    return "\n".join(lines)


def show(service: ModelService, body: ShowRequest) -> dict[str, Any]:
    name = body.model or body.name
    service.check_model(name)
    info = service.info
    template = service.prompts.template.source
    system = service.settings.model.system or ""
    parameters = _parameters_text(service)
    modelfile = [f"FROM {service.settings.model.model}"]
    if template:
        modelfile.append(f'TEMPLATE """{template}"""')
    if system:
        modelfile.append(f'SYSTEM """{system}"""')
    modelfile += [f"PARAMETER {line}" for line in parameters.splitlines()]
    capabilities = ["completion", "tools"]  # tools: shown by the template, or described in the system message
    if service.prompts.template.capabilities.thinking:
        capabilities.append("thinking")
    if info.supports_embeddings and service.settings.engine.embeddings:
        capabilities.append("embedding")
    return {
        "license": str(info.extra.get("general.license", "")),
        "modelfile": "\n".join(modelfile) + "\n",
        "parameters": parameters,
        "template": template,
        "system": system,
        "details": _details(service),
        "model_info": info.extra,
        "capabilities": capabilities,
        "modified_at": _modified_at(service),
    }


def vram_bytes(info: ModelInfo, engine: EngineSettings) -> int:
    """The model's bytes in accelerator memory, from the settings it was loaded with: its size when llama.cpp
    offloads every layer (its share of them when the model's metadata gives its block count), or when
    onnxruntime-genai runs on an accelerator; 0 on the CPU."""
    if info.engine == "onnxruntime-genai":
        return info.size_bytes if engine.execution_provider != "cpu" else 0
    if engine.gpu_layers == 0:
        return 0
    layers = int(info.extra.get(f"{info.family}.block_count", 0) or 0)
    if engine.gpu_layers < 0 or not layers or engine.gpu_layers >= layers:
        return info.size_bytes
    return info.size_bytes * engine.gpu_layers // layers


def ps(service: ModelService) -> dict[str, Any]:
    if not (service.ready and service.loaded):
        return {"models": []}
    name = _tag_name(service.name)
    expires_at = service.residency.expires_at or datetime.now(UTC) + timedelta(days=365 * 100)
    expires = expires_at.isoformat().replace("+00:00", "Z")
    info = service.info
    return {
        "models": [
            {
                "name": name,
                "model": name,
                "size": info.size_bytes,
                "digest": _digest(service),
                "details": _details(service),
                "expires_at": expires,
                "size_vram": vram_bytes(info, service.settings.engine),
                "context_length": info.context_length,
            }
        ]
    }
