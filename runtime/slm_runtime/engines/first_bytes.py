"""The vocabulary grouped by the first byte of each token, so that a grammar mask need not look at every token.

A grammar that refuses a single byte ``b`` at some point refuses every token whose text starts with ``b``: llama.cpp's
grammar matches a token's text from its first byte, and a lone lead byte of a UTF-8 character is accepted exactly
when some character starting with it could be (llama.cpp's partial UTF-8 matching). So one grammar check of a
*probe* per byte value (a token whose text is that single byte: SentencePiece's byte-fallback tokens ``<0xNN>``,
byte-level BPE's base alphabet) rules out whole groups before the grammar looks at the tokens themselves. Inside a
JSON string constant or at the opening brace, a handful of bytes are allowed and the grammar then checks a few
hundred or thousand tokens instead of the whole vocabulary.

Tokens without text are left out (llama.cpp's grammar refuses them); end-of-generation tokens are always candidates
(the grammar allows them once its output is complete); a byte without a probe keeps its group in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import NDArray

__all__ = ["FirstByteIndex"]

_NO_TEXT = 256


class FirstByteIndex:
    """Token ids by first byte, and the probe token of each byte (``-1``: none)."""

    def __init__(self, pieces: Sequence[bytes], end_of_generation: Sequence[int]) -> None:
        first = np.array([piece[0] if piece else _NO_TEXT for piece in pieces], dtype=np.int32)
        self._order = np.argsort(first, kind="stable").astype(np.int32)
        self._starts = np.searchsorted(first[self._order], np.arange(_NO_TEXT + 2))
        probes = np.full(256, -1, dtype=np.int32)
        for token, piece in enumerate(pieces):
            if len(piece) == 1 and probes[piece[0]] < 0:
                probes[piece[0]] = token
        self.probe_bytes = np.flatnonzero(probes >= 0).astype(np.int32)
        """The byte values that have a probe token, in order."""
        self.probes = probes[self.probe_bytes]
        """The probe token of each of :attr:`probe_bytes`."""
        self._eog = np.asarray(sorted(set(end_of_generation)), dtype=np.int32)

    @classmethod
    def of_vocab(cls, vocab: Any, n_vocab: int) -> FirstByteIndex:
        """The index of a llama.cpp vocabulary (pieces as the grammar sees them; about half a second for 262k)."""
        import ctypes

        from slm_runtime.engines.llama_native import quick_calls

        quick = quick_calls()
        buffer = ctypes.create_string_buffer(256)
        pieces: list[bytes] = []
        eog: list[int] = []
        for token in range(n_vocab):
            size = quick.token_to_piece(vocab, token, buffer, len(buffer), 0, True)
            pieces.append(buffer.raw[:size] if size > 0 else b"")
            if quick.is_eog(vocab, token):
                eog.append(token)
        return cls(pieces, eog)

    def candidates(self, allowed: NDArray[np.bool_]) -> NDArray[np.int32]:
        """Every token that may pass the grammar when the bytes ``allowed`` (256 flags) may come next."""
        groups = [self._order[self._starts[b] : self._starts[b + 1]] for b in np.flatnonzero(allowed)]
        return np.concatenate([*groups, self._eog]) if groups else self._eog.copy()
