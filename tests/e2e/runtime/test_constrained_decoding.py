"""Generation under a JSON-schema grammar on the real model (llama.cpp engine, :mod:`slm_runtime.engines.constrained`).

The grammar sampler checks the model's own choice against the grammar and masks candidates only when it is refused.
Here: greedy output is token for token what masking the whole vocabulary at every step gives (with and without
penalties, on both of its first-pass paths), output at temperature 0 and above always parses and validates against
a tool-call schema, the grammar's state advances exactly once per token, and the first-byte prefilter never drops a
token the grammar allows.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from runtime_e2e import make_settings

from slm_runtime.engines import llama_cpp
from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.constrained import GrammarRejectedAllError, GrammarSampler
from slm_runtime.engines.llama_cpp import LlamaCppEngine
from slm_runtime.engines.llama_native import TOKEN_DATA, candidates, quick_calls
from slm_runtime.engines.samplers import ChainSampler, TokenSampler, grammar_sampler, sampler_chain
from slm_runtime.tools.grammar import forced_call_schema
from slm_runtime.tools.types import ToolChoice, ToolFunction

pytestmark = pytest.mark.model


TOOLS = (
    ToolFunction(
        "get_weather",
        "",
        {
            "type": "object",
            "properties": {
                "location": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
                    "required": ["city"],
                },
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    ),
    ToolFunction(
        "send_email",
        "",
        {
            "type": "object",
            "properties": {
                "to": {"type": "array", "items": {"type": "string"}},
                "subject": {"type": "string"},
                "urgent": {"type": "boolean"},
            },
            "required": ["to", "subject"],
        },
    ),
)
TOOL_CALL = forced_call_schema(TOOLS, ToolChoice("required", parallel=False))
PROMPTS = [
    "User: What is the weather in Paris? Answer with a function call.\nAssistant:",
    "Write to bob@example.com that the meeting moves to Friday.\nCall:",
    "The capital of France is",
]


@pytest.fixture(scope="module")
def engine(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    loaded = LlamaCppEngine.load(make_settings(gguf_path, parallel=4, context_length=512))
    loaded.validate(SamplingParams(max_tokens=1, json_schema=TOOL_CALL))  # builds the first-byte index once
    yield loaded
    loaded.close()


@pytest.fixture
def samplers(monkeypatch: pytest.MonkeyPatch) -> list[TokenSampler]:
    """Every sampler the engine makes from here on (an observation: the engine's own are used)."""
    made: list[TokenSampler] = []
    original = llama_cpp.make_sampler

    def observed(*args: Any) -> TokenSampler:
        made.append(original(*args))
        if isinstance(made[-1], GrammarSampler):  # its native grammar, for the accept test (freed at the end)
            GRAMMARS[id(made[-1])] = address(made[-1]._grammar)
        return made[-1]

    monkeypatch.setattr(llama_cpp, "make_sampler", observed)
    return made


GRAMMARS: dict[int, int] = {}


def address(handle: Any) -> int:
    """The address a llama.cpp sampler handle points to, whichever ctypes form it comes in."""
    return handle if isinstance(handle, int) else int(ctypes.cast(handle, ctypes.c_void_p).value or 0)


def tokens(engine: LlamaCppEngine, prompt: str, params: SamplingParams, slot: int = 0) -> list[int]:
    return [t.token_id for t in engine.stream(slot, engine.tokenize(prompt), params, threading.Event())]


@pytest.mark.parametrize(
    "penalties",
    [
        {"repeat_penalty": 1.0},
        {"repeat_penalty": 1.3, "repeat_last_n": 16},  # first pass in numpy (GreedyPicker)
        {"repeat_penalty": 1.1, "frequency_penalty": 0.4},  # first pass on a clone of the chain
    ],
)
def test_greedy_output_is_what_masking_every_token_gives(
    engine: LlamaCppEngine, samplers: list[TokenSampler], monkeypatch: pytest.MonkeyPatch, penalties: dict[str, float]
) -> None:
    params = SamplingParams(max_tokens=64, temperature=0.0, json_schema=TOOL_CALL, **penalties)
    ours = [tokens(engine, prompt, params) for prompt in PROMPTS]
    grammar_samplers = [s for s in samplers if isinstance(s, GrammarSampler)]
    assert len(grammar_samplers) == len(PROMPTS)
    # Not a trivial agreement: the model's own choice was refused, and some refusals needed the full mask.
    assert sum(s.refused for s in grammar_samplers) >= 10
    assert sum(s.masked for s in grammar_samplers) >= 1

    def masking_every_token(vocab: Any, n_vocab: int, params: SamplingParams, seed: int, grammar: Any, index: Any):  # type: ignore[no-untyped-def]
        return ChainSampler(sampler_chain(vocab, n_vocab, params, seed, grammar))

    monkeypatch.setattr(llama_cpp, "make_sampler", masking_every_token)
    reference = [tokens(engine, prompt, params) for prompt in PROMPTS]
    assert ours == reference


@pytest.mark.parametrize(("temperature", "seeds"), [(0.0, [0]), (0.8, [1, 2, 3, 4]), (1.5, [5, 6, 7, 8])])
def test_output_always_parses_and_validates(engine: LlamaCppEngine, temperature: float, seeds: list[int]) -> None:
    """Four concurrent generations per case (one per slot), each a complete tool call of the schema."""
    outputs: dict[int, str] = {}

    def run(slot: int, seed: int) -> None:
        # Room for a long string value at a high temperature (one ran 215 tokens): every generation ends by itself.
        params = SamplingParams(max_tokens=400, temperature=temperature, seed=seed, json_schema=TOOL_CALL)
        prompt = PROMPTS[slot % len(PROMPTS)]
        outputs[slot] = "".join(t.text for t in engine.stream(slot, engine.tokenize(prompt), params, threading.Event()))

    threads = [threading.Thread(target=run, args=(slot, seed)) for slot, seed in enumerate(seeds)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert len(outputs) == len(seeds)
    for text in outputs.values():
        jsonschema.validate(json.loads(text), TOOL_CALL)


def test_the_grammar_advances_once_per_token(
    engine: LlamaCppEngine, samplers: list[TokenSampler], monkeypatch: pytest.MonkeyPatch
) -> None:
    quick = quick_calls()
    accepted: list[tuple[int, int]] = []
    accept = quick.accept

    def recorded(sampler: Any, token: int) -> None:
        accepted.append((address(sampler), int(token)))
        accept(sampler, token)

    monkeypatch.setattr(quick, "accept", recorded)
    params = SamplingParams(max_tokens=200, temperature=0.9, seed=11, json_schema=TOOL_CALL)
    generated = [t.token_id for t in engine.stream(0, engine.tokenize(PROMPTS[0]), params, threading.Event())]
    (sampler,) = samplers
    assert isinstance(sampler, GrammarSampler) and sampler.refused > 0
    fed = [token for target, token in accepted if target == GRAMMARS[id(sampler)]]
    assert fed[: len(generated)] == generated
    assert len(fed) - len(generated) in (0, 1)  # the end-of-generation token the grammar allowed, if it came
    assert all(quick.is_eog(engine._model.vocab, token) for token in fed[len(generated) :])


def test_the_first_byte_prefilter_keeps_every_token_the_grammar_allows(engine: LlamaCppEngine) -> None:
    """Walk the grammar along a valid tool call; at every step the full mask's survivors are all candidates."""
    vocab, n_vocab = engine._model.vocab, engine.info.vocab_size
    index = engine._first_byte_index()
    grammar = grammar_sampler(vocab, engine._grammar(TOOL_CALL))
    quick = quick_calls()
    cells = np.zeros(n_vocab, dtype=TOKEN_DATA)
    call = '{"name": "send_email", "arguments": {"to": ["bob@example.com", "ann@example.org"], "subject": "Friday ✓"}}'
    narrowed = []
    try:
        for token in engine.tokenize(call, add_special=False):
            cells["id"] = np.arange(n_vocab)
            cells["logit"] = 0.0
            quick.apply(grammar, ctypes.byref(candidates(cells, n_vocab)))
            allowed = set(np.flatnonzero(np.isfinite(cells["logit"])).tolist())
            probe = np.zeros(index.probes.shape[0], dtype=TOKEN_DATA)
            probe["id"] = index.probes
            quick.apply(grammar, ctypes.byref(candidates(probe, probe.shape[0])))
            first_bytes = np.ones(256, dtype=np.bool_)
            first_bytes[index.probe_bytes] = np.isfinite(probe["logit"])
            kept = set(index.candidates(first_bytes).tolist())
            assert allowed <= kept
            assert token in allowed
            narrowed.append(len(kept) / n_vocab)
            quick.accept(grammar, token)
    finally:
        quick.free(grammar)
    assert min(narrowed) < 0.01  # inside the function name a tiny share of the vocabulary is checked


def test_a_string_takes_no_raw_control_character(engine: LlamaCppEngine) -> None:
    """Inside a string of the schema's output the grammar refuses every token with a raw control character (a newline,
    a tab) and keeps its escaped form; llama-cpp-python's converter alone let a raw newline through."""
    vocab, n_vocab = engine._model.vocab, engine.info.vocab_size
    grammar = grammar_sampler(vocab, engine._grammar(TOOL_CALL))
    quick = quick_calls()
    try:
        for token in engine.tokenize('{"name": "send_email", "arguments": {"to": ["bob', add_special=False):
            quick.accept(grammar, token)
        cells = np.zeros(n_vocab, dtype=TOKEN_DATA)
        cells["id"] = np.arange(n_vocab)
        quick.apply(grammar, ctypes.byref(candidates(cells, n_vocab)))
        allowed = set(np.flatnonzero(np.isfinite(cells["logit"])).tolist())
    finally:
        quick.free(grammar)
    pieces = {token: engine.detokenize([token]) for token in range(n_vocab)}
    raw = {token for token, text in pieces.items() if text and any(ord(c) < 0x20 for c in text)}
    assert len(raw) > 100 and not raw & allowed
    assert {token for token, text in pieces.items() if text in ("\\n", "@", "o")} <= allowed


class FailingSampler:
    """Fails once ``neighbour`` is set and it has chosen three tokens, as a grammar sampler does when its grammar
    admits no token."""

    def __init__(self, inner: TokenSampler, neighbour: threading.Event) -> None:
        self.inner = inner
        self.neighbour = neighbour
        self.chosen = 0

    def choose(self, step: Any) -> int:
        if self.chosen >= 3 and self.neighbour.is_set():
            raise GrammarRejectedAllError("the JSON grammar admits no token at this point of the output")
        self.chosen += 1
        return self.inner.choose(step)

    def close(self) -> None:
        self.inner.close()


def test_a_sampler_that_fails_ends_its_own_sequence_only(
    engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
    alone = tokens(engine, PROMPTS[2], params, slot=1)
    neighbour_running = threading.Event()
    original = llama_cpp.make_sampler
    made: list[TokenSampler] = []

    def failing_first(*args: Any) -> TokenSampler:
        made.append(original(*args) if made else FailingSampler(original(*args), neighbour_running))
        return made[-1]

    monkeypatch.setattr(llama_cpp, "make_sampler", failing_first)
    outcome: dict[str, Any] = {"doomed": []}

    def doomed() -> None:
        long = replace(params, max_tokens=200)
        try:
            for token in engine.stream(0, engine.tokenize(PROMPTS[0]), long, threading.Event()):
                outcome["doomed"].append(token.token_id)
        except GrammarRejectedAllError as error:
            outcome["error"] = error

    thread = threading.Thread(target=doomed)
    thread.start()
    deadline = time.monotonic() + 30
    while not made and time.monotonic() < deadline:  # the doomed generation takes the failing sampler
        time.sleep(0.01)
    neighbour: list[int] = []
    for token in engine.stream(1, engine.tokenize(PROMPTS[2]), params, threading.Event()):
        neighbour.append(token.token_id)
        neighbour_running.set()
    thread.join(timeout=120)
    assert isinstance(outcome.get("error"), GrammarRejectedAllError)
    assert 3 <= len(outcome["doomed"]) < 200
    assert neighbour == alone
