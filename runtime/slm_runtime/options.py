"""Per-request generation options, common to both APIs, and their merge over the server defaults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from slm_runtime.engines.base import SamplingParams
from slm_runtime.settings import SamplingDefaults

__all__ = ["RequestOptions", "resolve_sampling"]


@dataclass(frozen=True)
class RequestOptions:
    """What a request asked for; None means "use the server default"."""

    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    num_predict: int | None = None
    num_ctx: int | None = None
    stop: tuple[str, ...] | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: int | None = None
    """None: no log-probabilities; 0: each generated token's; k > 0: also the k most likely tokens at each step."""
    truncate: bool = False
    extra_stop: tuple[str, ...] = field(default=())


def _pick(value: Any, default: Any) -> Any:
    return default if value is None else value


def resolve_sampling(defaults: SamplingDefaults, options: RequestOptions, max_tokens: int) -> SamplingParams:
    """Sampling parameters for one generation of at most ``max_tokens`` tokens."""
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=_pick(options.temperature, defaults.temperature),
        top_k=_pick(options.top_k, defaults.top_k),
        top_p=_pick(options.top_p, defaults.top_p),
        min_p=_pick(options.min_p, defaults.min_p),
        repeat_penalty=_pick(options.repeat_penalty, defaults.repeat_penalty),
        repeat_last_n=_pick(options.repeat_last_n, defaults.repeat_last_n),
        presence_penalty=_pick(options.presence_penalty, defaults.presence_penalty),
        frequency_penalty=_pick(options.frequency_penalty, defaults.frequency_penalty),
        seed=_pick(options.seed, defaults.seed),
        json_schema=options.json_schema,
        logprobs=options.logprobs,
    )
