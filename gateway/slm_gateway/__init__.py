"""slm-gateway: one OpenAI and Ollama endpoint for every SLMDeployment, routing by model name.

Where each piece lives (pure modules first; I/O only in ``proxy``, ``kube`` and ``cli``):

- ``settings``: the flags and SLM_GATEWAY_* variables; ``cli``: the `slm-gateway` command.
- ``catalog``: models and their ready pods, a plain structure updated by watch events; ``kube``: the watches
  that feed it and the wake writes, over the official Kubernetes client.
- ``dispatch``: in-flight counts, holding requests for models without a ready pod, the choice of a pod
  (``balance``: least in-flight, prefix affinity by consistent hashing with bounded loads); ``activator``:
  waking models at zero (direct or by KEDA's metric).
- ``proxy``: one model request, forwarded and streamed back byte for byte; ``body``: the model a body names and
  its rewrite, the prompt prefix; ``keys``: API keys; ``listing``: /v1/models, /api/tags, /api/ps;
  ``errors``: the API-shaped errors; ``metrics``: Prometheus; ``app``: the ASGI app.

The operator–gateway contract (model ids, metric names, KEDA's force-activation annotation) is
slm_operator.api.gateway. The gateway reads slm_operator.api only, never the controller.
"""

__version__ = "0.1.0"
