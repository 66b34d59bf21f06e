"""Service and NetworkPolicy: how clients and Prometheus reach the model server."""

from __future__ import annotations

from typing import Any

from slm_operator.api.resource import SLMDeployment
from slm_operator.api.spec import NetworkPolicySpec, ServerSpec
from slm_operator.render.meta import object_meta, selector_labels
from slm_operator.settings import OperatorSettings

__all__ = ["build_network_policy", "build_service", "endpoint"]


def _port(slm: SLMDeployment) -> int:
    return (slm.spec.server or ServerSpec()).port


def endpoint(slm: SLMDeployment) -> str:
    """The in-cluster URL of the Ollama/OpenAI API."""
    return f"http://{slm.metadata.name}.{slm.metadata.namespace or 'default'}.svc:{_port(slm)}"


def build_service(slm: SLMDeployment) -> dict[str, Any]:
    port = _port(slm)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_meta(slm),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(slm),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _namespace_peer(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def build_network_policy(slm: SLMDeployment, settings: OperatorSettings) -> dict[str, Any] | None:
    """Ingress to the server port from this namespace and the configured peers, from the monitoring
    namespace (for /metrics) and from slm-gateway's namespace when the operator has a gateway; None when
    spec.networkPolicy is not enabled."""
    policy = slm.spec.network_policy or NetworkPolicySpec()
    if not policy.enabled:
        return None
    peers = [{"podSelector": {}}, _namespace_peer(policy.monitoring_namespace)]
    gateway_namespace = settings.gateway_service.partition("/")[0]
    if gateway_namespace and gateway_namespace not in (policy.monitoring_namespace, slm.metadata.namespace):
        peers.append(_namespace_peer(gateway_namespace))
    peers += policy.allowed_peers or []
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": object_meta(slm),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(slm)},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": peers, "ports": [{"protocol": "TCP", "port": _port(slm)}]}],
        },
    }
