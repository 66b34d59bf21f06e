"""Local mode: the same SLMDeployment manifest served on a laptop, with Ollama-style commands.

``config`` turns a manifest into the runtime's settings through the operator's render path; ``server`` runs
the runtime in this process; ``client`` talks to a running one; ``chat``, ``bench``, ``cache`` and
``modelfile`` back the `slm run`, `slm bench`, `slm list/rm/show` and `slm import` commands.
"""
