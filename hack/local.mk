# Local mode: the same manifests on this machine (`make run` in the top Makefile serves the default).

.PHONY: chat bench-local test-local

chat: install ## Chat with the embedded default model in this terminal (/bye leaves)
	$(SLM) run examples/gemma3-270m.yaml

bench-local: install ## Tokens/s, time to first token and load time of the default model on this machine
	$(SLM) bench examples/gemma3-270m.yaml

test-local: install test-tools ## Local-mode tests: unit, then the real model (official clients, Modelfile import, tmux REPL)
	$(PY) -m pytest tests/unit/operator/local tests/e2e/local
