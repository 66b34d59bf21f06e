"""Ollama request models (the fields Ollama's /api accepts; unknown fields are ignored, as Ollama does)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "OPTIONS_REFUSED",
    "ChatMessage",
    "ChatRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "Options",
    "PullRequest",
    "ShowRequest",
    "Tool",
    "ToolCall",
    "ToolCallFunction",
]

KeepAlive = str | float | int | None
Format = Literal["", "json"] | dict[str, Any] | None
Think = bool | Literal["low", "medium", "high"] | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Request):
    """Ollama's runtime options (Modelfile PARAMETERs). Unknown ones are ignored, as Ollama does; known ones this
    runtime cannot honour are refused (:data:`OPTIONS_REFUSED`)."""

    num_ctx: int | None = Field(None, ge=1, description="Context window (at most the loaded one).")
    num_predict: int | None = Field(None, ge=-2, description="Most tokens to generate (-1: unlimited).")
    temperature: float | None = Field(None, ge=0, description="Sampling temperature; 0 is greedy.")
    top_k: int | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    repeat_last_n: int | None = Field(None, ge=-1)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    stop: list[str] | None = None
    num_thread: int | None = Field(None, description="Must equal the served value: a request cannot reload.")
    num_batch: int | None = Field(None, description="Must equal the served value: a request cannot reload.")
    num_gpu: int | None = Field(None, description="Must equal the served value: a request cannot reload.")
    typical_p: float | None = Field(None, description="Refused unless 1 (off).")
    num_keep: int | None = Field(None, description="Refused: a truncated prompt keeps its first token only.")


OPTIONS_REFUSED = ("typical_p", "num_keep")
"""Options refused when set (``typical_p`` of 1 is off, and accepted); num_thread, num_batch and num_gpu must
equal what the model was loaded with."""


class ToolCallFunction(_Request):
    index: int | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(_Request):
    id: str | None = None
    function: ToolCallFunction


class FunctionDefinition(_Request):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Request):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class _Generation(_Request):
    """What /api/generate and /api/chat both take."""

    model: str = Field(description="Model name, as listed by /api/tags.")
    format: Format = Field(None, description='"json" or a JSON schema that constrains the output.')
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = Field(None, description="0 unloads the model after the request.")
    think: Think = Field(None, description="Think first, where the template thinks (default: on there).")
    truncate: bool | None = Field(None, description="Cut a prompt longer than the context (default) or a 400.")
    shift: bool | None = Field(None, description="Refused when true: a generation stops at the context's end.")
    logprobs: bool | None = Field(None, description="Return each generated token's log-probability.")
    top_logprobs: int | None = Field(None, ge=0, le=20, description="Also the most likely tokens at each step.")


class GenerateRequest(_Generation):
    prompt: str = ""
    suffix: str | None = None
    images: list[str] | None = None
    system: str | None = None
    template: str | None = Field(None, description="Prompt template (Ollama syntax) for this request.")
    context: list[int] | None = Field(None, description="Tokens returned by an earlier response, to continue.")
    raw: bool = False


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = Field(None, description="The tool a tool message answers.")
    tool_call_id: str | None = None


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[Tool] | None = None


class EmbedRequest(_Request):
    model: str
    input: str | list[str] = Field(description="A text or a list of texts.")
    truncate: bool = True
    options: Options | None = None
    keep_alive: KeepAlive = None
    dimensions: int | None = Field(None, ge=1)


class EmbeddingsRequest(_Request):
    model: str
    prompt: str
    options: Options | None = None
    keep_alive: KeepAlive = None


class PullRequest(_Request):
    model: str = ""
    name: str = Field("", description="Older clients send the model here.")
    insecure: bool = False
    stream: bool = True


class ShowRequest(_Request):
    model: str = ""
    name: str = Field("", description="Older clients send the model here.")
    verbose: bool = False
