"""spec.messages (Ollama MESSAGE) on the real model: the server puts them before every chat conversation.

A server configured with preset messages must answer a chat exactly as a plain server answers the same chat with
those messages sent first by the client: the same greedy reply and the same prompt token count, through the
official `ollama` and `openai` clients. A generate request gets them on its first turn only, as in Ollama.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import ollama
import openai
import pytest
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, make_settings

from slm_runtime.engines.base import Engine
from slm_runtime.settings import RuntimeSettings

pytestmark = pytest.mark.model

GREEDY = {"temperature": 0, "num_predict": 16, "seed": 1}
PRESET = [
    {"role": "user", "content": "Reply with one word. What colour is the sky?"},
    {"role": "assistant", "content": "Blue."},
]
QUESTION = [{"role": "user", "content": "What colour is grass?"}]


@pytest.fixture(scope="module")
def preset_server(gguf_path: Path, shared_loader: Callable[[RuntimeSettings], Engine]) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(gguf_path, messages=PRESET), shared_loader)
    server.start()
    yield server
    server.stop()


def ollama_client(server: LiveServer) -> ollama.Client:
    return ollama.Client(host=server.url, headers={"Authorization": f"Bearer {API_KEY}"})


def test_ollama_chat_gets_the_preset_messages_first(live_server: LiveServer, preset_server: LiveServer) -> None:
    preset = ollama_client(preset_server).chat(model=MODEL_NAME, messages=QUESTION, options=GREEDY)
    by_hand = ollama_client(live_server).chat(model=MODEL_NAME, messages=[*PRESET, *QUESTION], options=GREEDY)
    plain = ollama_client(live_server).chat(model=MODEL_NAME, messages=QUESTION, options=GREEDY)
    assert preset.message.content == by_hand.message.content
    assert preset.prompt_eval_count == by_hand.prompt_eval_count
    assert preset.prompt_eval_count > plain.prompt_eval_count


def test_openai_chat_gets_the_preset_messages_first(live_server: LiveServer, preset_server: LiveServer) -> None:
    def ask(server: LiveServer, messages: list[dict[str, str]]) -> tuple[str, int]:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
        response = client.chat.completions.create(
            model=MODEL_NAME,
            messages=messages,  # type: ignore[arg-type]
            max_tokens=16,
            temperature=0,
            seed=1,
        )
        return response.choices[0].message.content or "", response.usage.prompt_tokens

    assert ask(preset_server, QUESTION) == ask(live_server, [*PRESET, *QUESTION])


def test_a_first_generate_turn_gets_them_and_a_continued_one_does_not(
    live_server: LiveServer, preset_server: LiveServer
) -> None:
    """As in Ollama: the preset goes before the prompt of a generate request without ``context``."""
    prompt = QUESTION[0]["content"]
    first = ollama_client(preset_server).generate(model=MODEL_NAME, prompt=prompt, options=GREEDY)
    by_hand = ollama_client(live_server).chat(model=MODEL_NAME, messages=[*PRESET, *QUESTION], options=GREEDY)
    assert (first.response, first.prompt_eval_count) == (by_hand.message.content, by_hand.prompt_eval_count)

    assert first.context
    follow_up = "And the sea?"
    continued = ollama_client(preset_server).generate(
        model=MODEL_NAME, prompt=follow_up, context=first.context, options=GREEDY
    )
    plain = ollama_client(live_server).generate(
        model=MODEL_NAME, prompt=follow_up, context=first.context, options=GREEDY
    )
    assert (continued.response, continued.prompt_eval_count) == (plain.response, plain.prompt_eval_count)
