"""The contract between the operator and slm-gateway, defined once: how the gateway names a model, the metric it
exports per model (which the operator's KEDA triggers query), and the annotation it sets to wake a model at zero.

slm_gateway imports this module (the gateway may read slm_operator.api); the operator's renderer imports it too, so
no name here is ever spelled a second time.
"""

from __future__ import annotations

__all__ = [
    "FORCE_ACTIVATION_ANNOTATION",
    "GATEWAY_HELD",
    "GATEWAY_INFLIGHT",
    "GATEWAY_MODEL_LABEL",
    "model_id",
    "split_model_id",
]

# Requests for one model that the gateway is answering or holding (held ones included): a gauge labelled
# with GATEWAY_MODEL_LABEL. KEDA's activation trigger of a model that scales to zero queries it.
GATEWAY_INFLIGHT = "slm_gateway_requests_inflight"
# Requests for one model held while it wakes from zero (a subset of GATEWAY_INFLIGHT).
GATEWAY_HELD = "slm_gateway_requests_held"
# The label carrying model_id() on every per-model gateway metric.
GATEWAY_MODEL_LABEL = "model"

# KEDA (>= 2.18) treats a ScaledObject carrying this annotation set to "true" as active: it scales the target from
# zero at its next poll and does not scale it back to zero while the annotation stays. The gateway sets it while it
# holds or answers requests for a model at zero, and removes it when it has none left.
FORCE_ACTIVATION_ANNOTATION = "autoscaling.keda.sh/force-activation"


def model_id(namespace: str, name: str) -> str:
    """The name clients use for an SLMDeployment at the gateway: ``<namespace>/<name>``."""
    return f"{namespace}/{name}"


def split_model_id(model: str) -> tuple[str | None, str]:
    """``team-a/assistant`` -> ("team-a", "assistant"); a bare ``assistant`` -> (None, "assistant")."""
    namespace, sep, name = model.partition("/")
    return (namespace, name) if sep else (None, model)
