"""slm-runtime: the inference server that slm-operator pods and `slm serve` run.

Where each piece lives:

- ``app`` (``create_app``), ``health``, ``deps``; middleware: ``auth``, ``limits``, ``accesslog``.
- The APIs, each a router, protocol models and serving logic: ``ollama``, ``openai``; what both share:
  ``request_context`` (the prelude and the outcome bookkeeping), ``streaming`` (stream or collect, errors
  midway), ``errors`` (one class per status, rendered in each API's shape), ``options``, ``stops``.
- The model service: ``service`` (load, readiness, admission through ``scheduler``), ``generation`` and
  ``embeddings`` (one request each, API-neutral), ``bridge`` and ``mailbox`` (engine thread -> event loop),
  ``workers`` (persistent threads).
- ``prompts``: templates (Jinja, Ollama's Go templates, the default), prompt building, token fitting.
- ``engines``: the Engine protocol (``engines.base``), llama.cpp, onnxruntime-genai and the fake engine of the
  fast tests.
- Configuration and the operator contract: ``settings``, ``metrics``, ``source``, ``fetch`` (``pull``), ``cli``.
"""

__version__ = "0.1.0"
