"""The vocabulary tables behind log-probabilities and grammar masks, on small hand-made vocabularies:
token bytes from a ``tokenizer.json`` (SentencePiece-style and byte-level BPE), and tokens grouped by first byte."""

from __future__ import annotations

import numpy as np

from slm_runtime.engines.first_bytes import FirstByteIndex
from slm_runtime.engines.onnx_vocab import token_pieces


def test_sentencepiece_pieces_have_their_spaces_and_byte_fallback_bytes() -> None:
    tokenizer = {
        "model": {"type": "BPE", "byte_fallback": True, "vocab": {"<pad>": 0, "▁the": 1, "<0xE2>": 2, "ing": 3}},
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
            ],
        },
        "added_tokens": [{"id": 0, "content": "<pad>"}, {"id": 4, "content": "<end_of_turn>"}],
    }
    assert token_pieces(tokenizer) == {0: b"<pad>", 1: b" the", 2: b"\xe2", 3: b"ing", 4: b"<end_of_turn>"}


def test_metaspace_decoders_turn_the_marker_into_a_space() -> None:
    tokenizer = {"model": {"vocab": {"▁Hi": 0}}, "decoder": {"type": "Metaspace", "replacement": "▁"}}
    assert token_pieces(tokenizer) == {0: b" Hi"}


def test_byte_level_pieces_map_each_stand_in_character_to_its_byte() -> None:
    # GPT-2's alphabet: "Ġ" is the space, "Ċ" the newline, "â", "Ģ" and "Ķ" the bytes of "—" (E2 80 94).
    tokenizer = {
        "model": {"type": "BPE", "vocab": {"Ġworld": 0, "Ċ": 1, "âĢĶ": 2, "!": 3}},
        "decoder": {"type": "ByteLevel"},
    }
    assert token_pieces(tokenizer) == {0: b" world", 1: b"\n", 2: "—".encode(), 3: b"!"}


def test_a_vocabulary_that_is_not_a_map_gives_no_table() -> None:
    assert token_pieces({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}) == {}


def test_first_byte_groups_probes_and_end_of_generation_tokens() -> None:
    pieces = [b"", b"{", b'{"', b" the", b" ", b"\xe2", b"\xe2\x80\x94", b"<eos>", b"t"]
    index = FirstByteIndex(pieces, end_of_generation=[7])
    assert dict(zip(index.probe_bytes.tolist(), index.probes.tolist(), strict=True)) == {
        ord("{"): 1,
        ord(" "): 4,
        0xE2: 5,
        ord("t"): 8,
    }
    allowed = np.zeros(256, dtype=np.bool_)
    allowed[ord("{")] = True
    assert sorted(index.candidates(allowed).tolist()) == [1, 2, 7]  # the end of generation is always a candidate
    allowed[0xE2] = True
    assert sorted(index.candidates(allowed).tolist()) == [1, 2, 5, 6, 7]
    assert index.candidates(np.zeros(256, dtype=np.bool_)).tolist() == [7]  # no token without text, ever
