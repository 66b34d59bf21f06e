"""The controller's only door to the apiserver: server-side apply, delete, status patches and discovery.

Every write goes through ``KubeClient`` so it is counted (slm_operator_api_writes_total), which is how
tests and benchmarks prove that a steady state writes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from slm_operator.api.resource import GROUP, KIND, PLURAL, VERSION
from slm_operator.controller import metrics

__all__ = [
    "PLURALS",
    "ApiConnection",
    "ApiError",
    "AsyncWriter",
    "KubeClient",
    "Writes",
    "collection_path",
    "load_kube_config",
    "object_path",
]

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


# Plural of every kind the operator writes: the async writer needs no discovery round trip.
PLURALS = {
    "PersistentVolumeClaim": "persistentvolumeclaims",
    "Service": "services",
    "Deployment": "deployments",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "PodDisruptionBudget": "poddisruptionbudgets",
    "NetworkPolicy": "networkpolicies",
    "ServiceMonitor": "servicemonitors",
    KIND: PLURAL,
}


_RESOURCE_VERSION = re.compile(rb'"resourceVersion":\s*"([^"]*)"')


def collection_path(api_version: str, plural: str, namespace: str | None = None) -> str:
    """The REST path of a collection: of one namespace, or of the whole cluster (``namespace`` None)."""
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespace is not None else f"{prefix}/{plural}"


def object_path(api_version: str, kind: str, namespace: str, name: str) -> str:
    """The REST path of a namespaced object of a kind in PLURALS."""
    return f"{collection_path(api_version, PLURALS[kind], namespace)}/{name}"


@dataclass
class Writes:
    """The writes one reconcile decided, in order (an Applier that records; ``AsyncWriter`` sends them)."""

    deletes: list[tuple[str, str, str, str]] = field(default_factory=list)
    applies: list[dict[str, Any]] = field(default_factory=list)

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applies.append(manifest)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deletes.append((api_version, kind, namespace, name))


class ApiError(RuntimeError):
    def __init__(self, method: str, path: str, status: int, text: str) -> None:
        super().__init__(f"{method} {path}: HTTP {status}: {text[:500]}")
        self.status = status


class ApiConnection:
    """How to reach the apiserver over aiohttp, from the same ``client.Configuration`` as the synchronous client
    (in-cluster token, refreshed as it rotates, or the kubeconfig's certificate or token): the writer and the
    watches each open their own sessions with it."""

    def __init__(self, configuration: client.Configuration) -> None:
        self._configuration = configuration
        self.host = configuration.host.rstrip("/")

    def _ssl(self) -> ssl.SSLContext | bool:
        cfg = self._configuration
        if not cfg.verify_ssl:
            return False
        context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
        if cfg.cert_file:
            context.load_cert_chain(cfg.cert_file, cfg.key_file)
        return context

    def session(self, connections: int, timeout: aiohttp.ClientTimeout) -> aiohttp.ClientSession:
        """A new session of at most ``connections`` connections (0: no limit)."""
        connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=connections)
        return aiohttp.ClientSession(connector=connector, timeout=timeout)

    def headers(self, content_type: str = "application/json") -> dict[str, str]:
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        token = self._configuration.get_api_key_with_prefix("BearerToken", alias="authorization")  # refreshes
        if token:
            headers["Authorization"] = token
        return headers


class AsyncWriter:
    """Server-side apply, delete and status patches over one aiohttp session on the operator's event loop: no
    thread per request, no discovery, connections kept open (``ApiConnection``)."""

    def __init__(self, configuration: client.Configuration, field_manager: str, connections: int) -> None:
        self._connection = ApiConnection(configuration)
        self._host = self._connection.host
        self._field_manager = field_manager
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _session_now(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._connection.session(self._connections, aiohttp.ClientTimeout(total=60))
        return self._session

    async def _send(self, method: str, path: str, content_type: str, body: Any, params: dict[str, str]) -> bytes:
        data = json.dumps(body) if body is not None else None
        session = self._session_now()
        async with session.request(
            method, self._host + path, params=params, data=data, headers=self._connection.headers(content_type)
        ) as reply:
            if reply.status >= 300:
                raise ApiError(method, path, reply.status, await reply.text())
            return await reply.read()

    async def apply(self, manifest: dict[str, Any]) -> str:
        """Server-side apply under the operator's field manager, taking over conflicting fields; the resourceVersion
        of the object as applied ("" if the answer has none)."""
        meta = manifest["metadata"]
        path = object_path(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
        metrics.API_WRITES.labels(verb="apply", kind=manifest["kind"]).inc()
        log.info("apply %s %s/%s", manifest["kind"], meta["namespace"], meta["name"])
        params = {"fieldManager": self._field_manager, "force": "true"}
        answer = await self._send("PATCH", path, "application/apply-patch+yaml", manifest, params)
        # The object's own resourceVersion is the first in the answer (metadata precedes everything nested).
        found = _RESOURCE_VERSION.search(answer)
        return found.group(1).decode() if found else ""

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Delete an object (its dependents in the background), ignoring one that is already gone."""
        metrics.API_WRITES.labels(verb="delete", kind=kind).inc()
        log.info("delete %s %s/%s", kind, namespace, name)
        try:
            await self._send("DELETE", object_path(api_version, kind, namespace, name), "application/json", None, {})
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def patch_slm_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        """Merge ``status`` into an SLMDeployment's status subresource, ignoring one that is already gone."""
        metrics.API_WRITES.labels(verb="patch", kind=KIND).inc()
        path = object_path(f"{GROUP}/{VERSION}", KIND, namespace, name) + "/status"
        try:
            await self._send("PATCH", path, "application/merge-patch+json", {"status": status}, {})
        except ApiError as exc:
            if exc.status != 404:
                raise

    async def write(self, writes: Writes) -> list[str]:
        """Deletions first (KEDA refuses a ScaledObject whose Deployment another HPA still targets), then the
        applies, all at once (nothing needs another to exist first: a pod waits for its claim, an HPA for its
        target). The resourceVersions of the applied objects, in the order of ``writes.applies``."""
        for api_version, kind, namespace, name in writes.deletes:
            await self.delete(api_version, kind, namespace, name)
        return list(await asyncio.gather(*(self.apply(manifest) for manifest in writes.applies)))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
