"""Each token's bytes, from a Hugging Face ``tokenizer.json``: what log-probabilities report for the ONNX engine.

onnxruntime-genai decodes token sequences to text only. Decoding one token alone loses what log-probabilities
need: SentencePiece decoders drop the leading space of a first word, and a byte-fallback token (``<0xE2>``, one
byte of a UTF-8 character) decodes to a replacement character. The vocabulary in ``tokenizer.json`` has the exact
pieces, and its ``decoder`` section says how they map to bytes:

- byte-level BPE (GPT-2, Llama 3, Qwen; a ``ByteLevel`` decoder): each character of a piece stands for one byte;
- SentencePiece-style (Gemma, Llama 2, Phi-3; ``Replace``/``Metaspace`` decoders, ``ByteFallback``): ``▁`` is a
  space and ``<0xNN>`` is the byte NN;
- added tokens (control tokens among them) are their content, as llama.cpp renders them with ``special``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["token_pieces"]

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's map from the printable stand-in characters back to bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    stand_ins = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in stand_ins:
            stand_ins[byte] = chr(256 + extra)
            extra += 1
    return {char: byte for byte, char in stand_ins.items()}


def _decoders(section: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    if not section:
        return []
    if section.get("type") == "Sequence":
        return [d for d in section.get("decoders", []) if isinstance(d, Mapping)]
    return [section]


def token_pieces(tokenizer: Mapping[str, Any]) -> dict[int, bytes]:
    """Token id -> bytes for every token of a parsed ``tokenizer.json`` (empty when its vocabulary is not a map)."""
    model = tokenizer.get("model") or {}
    vocab = model.get("vocab")
    if not isinstance(vocab, Mapping):
        return {}
    decoders = _decoders(tokenizer.get("decoder"))
    kinds = {d.get("type") for d in decoders}
    pieces: dict[int, bytes] = {}
    if "ByteLevel" in kinds:
        alphabet = _byte_level_alphabet()
        for piece, token in vocab.items():
            pieces[int(token)] = bytes(alphabet.get(char, 0x3F) for char in piece)
    else:
        replacements = [
            (str(d["pattern"]["String"]), str(d.get("content", "")))
            for d in decoders
            if d.get("type") == "Replace" and isinstance(d.get("pattern"), Mapping) and "String" in d["pattern"]
        ]
        replacements += [(str(d.get("replacement", "▁")), " ") for d in decoders if d.get("type") == "Metaspace"]
        byte_fallback = "ByteFallback" in kinds or bool(model.get("byte_fallback"))
        for piece, token in vocab.items():
            match = _BYTE_TOKEN.fullmatch(piece) if byte_fallback else None
            if match:
                pieces[int(token)] = bytes([int(match.group(1), 16)])
                continue
            for old, new in replacements:
                piece = piece.replace(old, new)
            pieces[int(token)] = piece.encode("utf-8")
    for added in tokenizer.get("added_tokens") or []:
        if isinstance(added, Mapping) and "id" in added:
            pieces[int(added["id"])] = str(added.get("content", "")).encode("utf-8")
    return pieces
