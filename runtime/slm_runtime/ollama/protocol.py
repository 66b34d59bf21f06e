"""Ollama request models (the fields Ollama's /api accepts; unknown fields are ignored, as Ollama does)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "EmbedRequest",
    "EmbeddingsRequest",
    "GenerateRequest",
    "Options",
    "PullRequest",
    "ShowRequest",
]

KeepAlive = str | float | int | None
Format = Literal["", "json"] | dict[str, Any] | None


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Options(_Request):
    """Ollama's runtime options (Modelfile PARAMETERs); those this runtime cannot change are ignored."""

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
    num_thread: int | None = None
    num_batch: int | None = None
    num_gpu: int | None = None
    typical_p: float | None = None
    num_keep: int | None = None


class GenerateRequest(_Request):
    model: str = Field(description="Model name, as listed by /api/tags.")
    prompt: str = ""
    suffix: str | None = None
    images: list[str] | None = None
    format: Format = Field(None, description='"json" or a JSON schema that constrains the output.')
    options: Options | None = None
    system: str | None = None
    template: str | None = Field(None, description="Prompt template (Ollama syntax) for this request.")
    context: list[int] | None = Field(None, description="Tokens returned by an earlier response, to continue.")
    stream: bool = True
    raw: bool = False
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    truncate: bool | None = Field(None, description="Cut a prompt longer than the context instead of a 400.")


class ChatMessage(_Request):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    model: str
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None
    format: Format = None
    options: Options | None = None
    stream: bool = True
    keep_alive: KeepAlive = None
    think: bool | str | None = None
    truncate: bool | None = None


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
