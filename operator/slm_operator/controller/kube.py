"""The controller's only door to the apiserver: server-side apply, delete, status patches and discovery.

Every write goes through ``KubeClient`` so it is counted (slm_operator_api_writes_total), which is how
tests and benchmarks prove that a steady state writes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from slm_operator.api.resource import GROUP, KIND, PLURAL, VERSION
from slm_operator.controller import metrics

__all__ = ["KubeClient", "load_kube_config"]

log = logging.getLogger(__name__)


def load_kube_config(connections: int = 16) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig ($KUBECONFIG or ~/.kube/config).

    ``connections`` sizes the HTTP connection pool: one per handler worker, so that concurrent reconciles do not
    discard and reopen connections (the client's default pool holds 10).
    """
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)
    configuration.connection_pool_maxsize = connections
    return client.ApiClient(configuration)


class KubeClient:
    """Server-side apply and delete for the objects an SLMDeployment owns."""

    def __init__(self, api_client: client.ApiClient, field_manager: str) -> None:
        self._dynamic = DynamicClient(api_client)
        self._custom = client.CustomObjectsApi(api_client)
        self._field_manager = field_manager

    def _resource(self, api_version: str, kind: str) -> Any:
        return self._dynamic.resources.get(api_version=api_version, kind=kind)

    def has_kind(self, api_version: str, kind: str) -> bool:
        """Whether the cluster serves this kind (e.g. the Prometheus Operator's ServiceMonitor)."""
        try:
            self._resource(api_version, kind)
        except ResourceNotFoundError:
            return False
        return True

    def apply(self, manifest: dict[str, Any]) -> None:
        """Server-side apply under the operator's field manager, taking over conflicting fields."""
        meta = manifest["metadata"]
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        metrics.API_WRITES.labels(verb="apply", kind=manifest["kind"]).inc()
        log.info("apply %s %s/%s", manifest["kind"], meta.get("namespace"), meta["name"])
        resource.server_side_apply(
            body=manifest,
            name=meta["name"],
            namespace=meta.get("namespace"),
            field_manager=self._field_manager,
            force_conflicts=True,
        )

    def patch_slm_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into an SLMDeployment's status subresource, ignoring one that is already gone."""
        metrics.API_WRITES.labels(verb="patch", kind=KIND).inc()
        try:
            self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, PLURAL, name, {"status": status}
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete an object, ignoring one that is already gone."""
        metrics.API_WRITES.labels(verb="delete", kind=kind).inc()
        log.info("delete %s %s/%s", kind, namespace, name)
        try:
            self._resource(api_version, kind).delete(name=name, namespace=namespace)
        except NotFoundError:
            pass
        except ApiException as exc:
            if exc.status != 404:
                raise
