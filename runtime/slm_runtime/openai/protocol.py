"""OpenAI request models for /v1 (unknown fields are ignored; known ones this server cannot honour get a 400 naming
them, see :data:`CHAT_REFUSED` and :data:`COMPLETION_REFUSED`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CHAT_REFUSED",
    "COMPLETION_REFUSED",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "ContentPart",
    "EmbeddingRequest",
    "FunctionDefinition",
    "JsonSchemaFormat",
    "MessageToolCall",
    "ResponseFormat",
    "StreamOptions",
    "Tool",
    "ToolCallFunction",
]

FUNCTION_NAME = r"^[A-Za-z0-9_.-]{1,64}$"
"""OpenAI's rule for a function name (letters, digits, underscores and dashes, at most 64; dots as llama.cpp)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ContentPart(_Request):
    type: str = Field(description='"text" (other part types are refused).')
    text: str | None = None


class ToolCallFunction(_Request):
    name: str
    arguments: str = Field("{}", description="The call's arguments: a JSON object, as a string.")


class MessageToolCall(_Request):
    """A call an assistant message made, as the client sends it back in the history."""

    id: str = ""
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ChatMessage(_Request):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = Field(None, description="A participant's name (accepted; templates do not show it).")
    tool_calls: list[MessageToolCall] | None = Field(None, description="The calls an assistant message made.")
    tool_call_id: str | None = Field(None, description="The call a tool message answers.")
    reasoning_content: str | None = Field(None, description="An assistant message's reasoning (llama-server's name).")


class FunctionDefinition(_Request):
    name: str = Field(pattern=FUNCTION_NAME)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON schema of the arguments (an object).")
    strict: bool | None = Field(None, description="Accepted; required and named calls always follow the schema.")


class Tool(_Request):
    type: Literal["function"] = Field(description='"function" (the only tool type served).')
    function: FunctionDefinition


class JsonSchemaFormat(_Request):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Request):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(_Request):
    include_usage: bool = False


class _Sampling(_Request):
    model: str = Field(description="Model id, as listed by /v1/models.")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int | None = Field(None, ge=1, le=16, description="Choices to generate, each on its own slot.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = Field(None, description="Up to 4 sequences that end the generation.")
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    seed: int | None = Field(None, description="Choice i samples with seed + i.")
    user: str | None = Field(None, description="Accepted; no effect.")
    logit_bias: dict[str, float] | None = Field(None, description="Refused unless empty.")


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    tools: list[Tool] | None = None
    tool_choice: str | dict[str, Any] | None = Field(
        None, description='"none", "auto", "required" or {"type": "function", "function": {"name": ...}}.'
    )
    parallel_tool_calls: bool | None = None
    reasoning_effort: str | None = Field(None, description="Thinking on or off, where the template thinks.")
    # Known and refused when set (see CHAT_REFUSED).
    audio: dict[str, Any] | None = None
    modalities: list[str] | None = None
    prediction: dict[str, Any] | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    verbosity: str | None = None
    # Known and without effect on the answer (the provider's bookkeeping).
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None


CHAT_REFUSED: dict[str, str] = {
    "logit_bias": "logit_bias is not supported",
    "audio": "audio output is not supported: this model answers in text",
    "prediction": "predicted outputs are not supported",
    "functions": 'the deprecated "functions" are not supported: send them as "tools"',
    "function_call": 'the deprecated "function_call" is not supported: send "tool_choice"',
    "web_search_options": "web search is not supported",
    "verbosity": "verbosity is not supported",
}
"""Known chat fields refused when set (``modalities`` other than ["text"] is refused apart)."""


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="A prompt, or a list of prompts (n choices each).")
    suffix: str | None = None
    max_tokens: int | None = Field(16, ge=0)
    echo: bool | None = False
    logprobs: int | None = Field(None, ge=0, le=5)
    best_of: int | None = Field(None, ge=1)


COMPLETION_REFUSED: dict[str, str] = {
    "logit_bias": "logit_bias is not supported",
    "suffix": "suffix (fill in the middle) is not supported",
}
"""Known completion fields refused when set (``best_of`` other than ``n`` is refused apart)."""


class EmbeddingRequest(_Request):
    model: str
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None
