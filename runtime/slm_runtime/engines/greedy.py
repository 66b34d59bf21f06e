"""Greedy decoding straight from the logits: the same token llama.cpp's sampler chain picks, for a fraction of its cost.

llama.cpp's ``llama_sampler_sample`` copies every logit into a candidate array before the chain looks at it. With
Gemma 3's 262,144-token vocabulary that copy and the greedy scan cost about 0.5 ms per token, and the repetition
penalty's hash look-up of every candidate about 1.7 ms: with eight sequences in a step, several milliseconds
of one core while the other compute thread waits. A greedy request (temperature 0, no grammar) needs none of it:
the repetition penalty touches only the tokens in its window, and the choice is the first highest logit.

:class:`GreedyPicker` applies llama.cpp's repetition penalty to those few logits (multiply a non-positive logit by
the penalty, divide a positive one: one IEEE float32 operation each, as in C) and takes the first maximum, as
llama.cpp's greedy sampler does, so the tokens are identical. Frequency and presence penalties are left to llama.cpp
(:func:`fast_greedy_applies` says no): their multiply-add may be contracted into one rounding there.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from slm_runtime.engines.base import SamplingParams
    from slm_runtime.engines.samplers import StepLogits

__all__ = ["GreedyPicker", "fast_greedy_applies"]


def fast_greedy_applies(params: SamplingParams, constrained: bool) -> bool:
    """Whether :class:`GreedyPicker` picks exactly what the llama.cpp chain would for these parameters."""
    return (
        params.temperature <= 0.0
        and not constrained
        and params.frequency_penalty == 0.0
        and params.presence_penalty == 0.0
    )


class GreedyPicker:
    """The greedy choice for one sequence, with llama.cpp's repetition penalty over its last ``last_n`` tokens."""

    def __init__(self, repeat_penalty: float, last_n: int) -> None:
        self.penalty = np.float32(repeat_penalty)
        self.last_n = max(last_n, 0)
        self._window: collections.deque[int] = collections.deque(maxlen=self.last_n or 1)
        self._penalized = self.last_n > 0 and repeat_penalty != 1.0

    def choose(self, step: StepLogits) -> int:
        """:meth:`pick` on the step's logits (the decoder's sampler interface)."""
        return self.pick(step.row())

    def close(self) -> None:
        """Nothing native to free."""

    def pick(self, logits: NDArray[np.float32]) -> int:
        """The token to emit, from this step's logits (not modified); remembers it for the penalty window."""
        token = self.peek(logits)
        self.remember(token)
        return token

    def peek(self, logits: NDArray[np.float32]) -> int:
        """The greedy choice from these logits (not modified), without remembering it."""
        return self._pick_penalized(logits) if self._penalized and self._window else int(logits.argmax())

    def remember(self, token: int) -> None:
        """Put the token emitted (whoever chose it) in the penalty window."""
        if self.last_n:
            self._window.append(token)

    def _pick_penalized(self, logits: NDArray[np.float32]) -> int:
        ids = np.fromiter(set(self._window), dtype=np.int64)
        values = logits[ids]
        values = np.where(values <= 0, values * self.penalty, values / self.penalty).astype(np.float32)
        adjusted = logits.copy()
        adjusted[ids] = values
        return int(adjusted.argmax())
