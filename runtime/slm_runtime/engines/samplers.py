"""How a sequence in the llama.cpp batch chooses its next token: one small interface, four samplers.

- :class:`~slm_runtime.engines.greedy.GreedyPicker`: temperature 0 without a grammar, straight from the logits;
- :class:`~slm_runtime.engines.draw.TokenDraw`: temperature > 0 without a grammar, llama.cpp's distribution drawn
  from the few candidates it can keep;
- :class:`ChainSampler`: llama.cpp's own sampler chain (:func:`sampler_chain`) through ``llama_sampler_sample`` (the
  reference the other two match, and what samples where they do not apply);
- :class:`~slm_runtime.engines.constrained.GrammarSampler`: a chain under a JSON-schema grammar.

Each gets the step's :class:`StepLogits` and returns the token, having remembered it (penalty windows, grammar
state); the decoder owns the sampler and closes it when the sequence ends.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from slm_runtime.engines.llama_native import TOKEN_DATA, candidates, quick_calls

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from slm_runtime.engines.base import SamplingParams

__all__ = [
    "ChainSampler",
    "StepLogits",
    "TokenSampler",
    "apply_to_row",
    "choice_chain",
    "cuts_chain",
    "grammar_sampler",
    "penalties_sampler",
    "sampler_chain",
]


class StepLogits:
    """One sequence's logits in the step just decoded: where llama.cpp keeps them, and a numpy view of them."""

    def __init__(self, ctx: Any, index: int, n_vocab: int) -> None:
        self.ctx = ctx
        self.index = index
        self.n_vocab = n_vocab
        self._row: NDArray[np.float32] | None = None

    def row(self) -> NDArray[np.float32]:
        """The raw logits (a view into llama.cpp's buffer, valid until the next decode; do not modify it)."""
        if self._row is None:
            pointer = quick_calls().logits(self.ctx, self.index)
            if not pointer:
                raise RuntimeError(f"llama.cpp has no logits for batch index {self.index}")
            self._row = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        return self._row


class TokenSampler(Protocol):
    def choose(self, step: StepLogits) -> int:
        """The next token from this step's logits; the sampler has accepted it (penalties, grammar) on return."""
        ...

    def close(self) -> None:
        """Free native resources (called once, on the decoder thread, when the sequence ends)."""
        ...


class ChainSampler:
    """llama.cpp's ``llama_sampler_sample``: copies the logits into a candidate array, applies and accepts."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain

    def choose(self, step: StepLogits) -> int:
        return int(quick_calls().sample(self._chain, step.ctx, step.index))

    def accept(self, token: int) -> None:
        """Put a token another sampler chose into the chain's state (its penalty window), as ``choose`` does."""
        quick_calls().accept(self._chain, token)

    def close(self) -> None:
        import llama_cpp

        if self._chain is not None:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None


def apply_to_row(chain: Any, logits: NDArray[np.float32]) -> tuple[np.ndarray[Any, Any], int]:
    """Apply ``chain`` to a candidate array of every token with these logits, in token order (as
    ``llama_sampler_sample`` lays it out; the logits are copied): the cells it keeps, in its order, with the
    probabilities its last sampler wrote (:data:`~slm_runtime.engines.llama_native.TOKEN_DATA`), and the index it
    selected among them (-1: none). Nothing is accepted."""
    size = logits.shape[0]
    cells = np.empty(size, dtype=TOKEN_DATA)
    cells["id"] = np.arange(size)
    cells["logit"] = logits
    cells["p"] = 0.0
    array = candidates(cells, size)
    quick_calls().apply(chain, ctypes.byref(array))
    return cells[: int(array.size)], int(array.selected)


def choice_chain(params: SamplingParams, seed: int, *, penalties: int | None = None) -> Any:
    """The chain that picks the token, in the order llama-cpp-python's ``Llama.generate`` builds it: llama.cpp's
    penalties over a vocabulary of ``penalties`` tokens (left out when None), then greedy (temperature 0) or top-k,
    top-p, min-p, temperature and a seeded draw. The caller owns the chain (``llama_sampler_free``)."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    if penalties is not None:
        add(chain, penalties_sampler(penalties, params))
    if params.temperature <= 0.0:
        add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    _add_cuts(chain, params)
    add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
    add(chain, llama_cpp.llama_sampler_init_dist(seed))
    return chain


def cuts_chain(params: SamplingParams) -> Any:
    """The cuts of :func:`choice_chain` alone (top-k, top-p, min-p): applied to a candidate array, it leaves the
    tokens the draw is made from, sorted by logit, their logits untouched. The caller owns the chain."""
    import llama_cpp

    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    _add_cuts(chain, params)
    return chain


def _add_cuts(chain: Any, params: SamplingParams) -> None:
    import llama_cpp

    add = llama_cpp.llama_sampler_chain_add
    add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
    add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
    add(chain, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))


def sampler_chain(vocab: Any, n_vocab: int, params: SamplingParams, seed: int, grammar: Any | None) -> Any:
    """Penalties, then the grammar (a ``LlamaGrammar``; None: none), then the choice, in one llama.cpp chain.

    With a grammar this masks the whole vocabulary at every token (the reference that
    :class:`~slm_runtime.engines.constrained.GrammarSampler` matches for greedy requests, at a fraction of the cost).
    """
    import llama_cpp

    if grammar is None:
        return choice_chain(params, seed, penalties=n_vocab)
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    add = llama_cpp.llama_sampler_chain_add
    add(chain, penalties_sampler(n_vocab, params))
    add(chain, grammar_sampler(vocab, grammar))
    add(chain, choice_chain(params, seed))
    return chain


def grammar_sampler(vocab: Any, grammar: Any) -> Any:
    """llama.cpp's grammar sampler for a ``LlamaGrammar`` (GBNF text and root rule)."""
    import llama_cpp

    return llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))


def penalties_sampler(n_vocab: int, params: SamplingParams) -> Any:
    """llama.cpp's repetition, frequency and presence penalties over the last ``repeat_last_n`` accepted tokens."""
    import llama_cpp

    return llama_cpp.llama_sampler_init_penalties(
        n_vocab, params.repeat_last_n, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
    )
