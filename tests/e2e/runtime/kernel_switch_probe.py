"""Run by test_kernel_switch.py in a process of its own, with ggml's tiled kernel on as in a served engine's process
(its switch is fixed once per process, at the first matrix product).

    python kernel_switch_probe.py MODEL.gguf PARALLEL

Loads the llama.cpp engine with PARALLEL slots and the default (batch-invariant) settings, runs one greedy
generation per slot alone, then all at once: slot 0 starts once all the others generate, and its prompt is long enough
to be read in several chunks beside them; they generate long enough to be still at it when slot 0 generates (so that a
step with every slot generating happens however the machine's load delays the threads). Prints one JSON object: the
process switch, how many weights the engine's tiled gate holds, whether every generation's tokens and
log-probabilities were the same, and every decode call seen (sequences, tokens).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

from runtime_e2e import make_settings

from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.cpu_kernels import TILED_SWITCH
from slm_runtime.engines.llama_cpp import LlamaCppEngine

BATCH = 64
HISTORY = "The lighthouse on the northern cape was built in 1851 and rebuilt after the storm of 1903. "


def main() -> None:
    model, parallel = Path(sys.argv[1]), int(sys.argv[2])
    engine = LlamaCppEngine.load(
        make_settings(model, parallel=parallel, context_length=1024, batch_size=BATCH, prompt_cache=False)
    )
    texts = [HISTORY * 6 + "Keeper 0 writes in the log:"]
    texts += [f"Keeper {slot} of the lighthouse writes in the log:" for slot in range(1, parallel)]
    prompts = [engine.tokenize(text) for text in texts]

    def scored(slot: int) -> list[tuple[int, float | None]]:
        tokens = 12 if slot == 0 else 48  # the others outlast slot 0's chunked prompt and its 12 tokens
        params = SamplingParams(max_tokens=tokens, temperature=0.0, repeat_penalty=1.0, logprobs=1)
        return [(t.token_id, t.logprob) for t in engine.stream(slot, prompts[slot], params, threading.Event())]

    solo = [scored(slot) for slot in range(parallel)]
    steps: list[tuple[int, int]] = []
    others_generate = threading.Event()

    def observe(sequences: int, tokens: int) -> None:
        steps.append((sequences, tokens))
        if sequences == tokens == parallel - 1:
            others_generate.set()

    together: dict[int, list[tuple[int, float | None]]] = {}
    engine.observe_steps(observe)
    threads = [
        threading.Thread(target=lambda slot=slot: together.__setitem__(slot, scored(slot))) for slot in range(parallel)
    ]
    for thread in threads[1:]:
        thread.start()
    others_generate.wait(timeout=300)
    threads[0].start()  # once the others generate, so that its long prompt is read beside their generating calls
    for thread in threads:
        thread.join(timeout=300)
    gate = engine._decoder._gate  # what the engine built; read here only
    engine.close()
    print(
        json.dumps(
            {
                "switch": os.environ.get(TILED_SWITCH),
                "gated_weights": 0 if gate is None else gate.weights,
                "prompt_tokens": len(prompts[0]),
                "same": [together.get(slot) == solo[slot] for slot in range(parallel)],
                "steps": steps,
            }
        )
    )


if __name__ == "__main__":
    main()
