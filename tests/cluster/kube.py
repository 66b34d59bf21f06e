"""Small helpers over the Python `kubernetes` client used by the control plane and its fixtures."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from cluster.nodes import TestNode, node_manifest
from cluster.pki import CertKey

__all__ = [
    "ApiException",
    "api_client",
    "client_for",
    "create_node",
    "missing",
    "missing_service_account",
    "namespace_conditions",
    "namespace_gone",
    "unready_nodes",
    "write_kubeconfig",
]


def missing(read: Callable[[], object]) -> bool:
    """Whether ``read()`` answers 404 (other API errors are raised)."""
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def write_kubeconfig(path: Path, server: str, ca: Path, user: CertKey, name: str, *, embed: bool = False) -> None:
    """A kubeconfig for one client-certificate user; `embed` inlines the PEM data instead of file paths."""
    cluster: dict[str, Any] = {"server": server}
    credentials: dict[str, Any]
    if embed:
        cluster["certificate-authority-data"] = _b64(ca)
        credentials = {"client-certificate-data": _b64(user.cert), "client-key-data": _b64(user.key)}
    else:
        cluster["certificate-authority"] = str(ca)
        credentials = {"client-certificate": str(user.cert), "client-key": str(user.key)}
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "slm-test", "cluster": cluster}],
        "users": [{"name": name, "user": credentials}],
        "contexts": [{"name": name, "context": {"cluster": "slm-test", "user": name}}],
        "current-context": name,
        "preferences": {},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    path.chmod(0o600)


def client_for(kubeconfig: Path) -> client.ApiClient:
    """An ApiClient for a kubeconfig file (the caller closes it, or use :func:`api_client`)."""
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call,unused-ignore]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    return client.ApiClient(configuration)


@contextmanager
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    """An ApiClient closed (its connection pool shut down) on exit."""
    api = client_for(kubeconfig)
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call,unused-ignore]


def create_node(api: client.ApiClient, node: TestNode) -> None:
    """Create the node object kwok will simulate (left as is when it already exists)."""
    core = client.CoreV1Api(api)
    try:
        body = client.V1Node.from_dict(node_manifest(node))
        assert body is not None
        core.create_node(body)
    except ApiException as error:
        if error.status != 409:
            raise


def _ready(node: Any) -> bool:
    conditions = node.status.conditions or []
    ready = any(c.type == "Ready" and c.status == "True" for c in conditions)
    not_ready_taint = any(t.key.startswith("node.kubernetes.io/") for t in node.spec.taints or [])
    return ready and not not_ready_taint


def unready_nodes(api: client.ApiClient, nodes: tuple[TestNode, ...]) -> list[str]:
    """Names of the expected nodes that are not Ready yet (or still carry a node-lifecycle taint)."""
    present = {item.metadata.name: item for item in client.CoreV1Api(api).list_node().items if item.metadata}
    return [node.name for node in nodes if node.name not in present or not _ready(present[node.name])]


def missing_service_account(api: client.ApiClient, namespace: str = "default", name: str = "default") -> list[str]:
    """[] once the service account exists (pods need it before they can be created)."""
    try:
        client.CoreV1Api(api).read_namespaced_service_account(name, namespace)
    except ApiException as error:
        if error.status == 404:
            return [f"{namespace}/{name}"]
        raise
    return []


def namespace_gone(api: client.ApiClient, name: str) -> bool:
    """True once the namespace is fully deleted (its finalizers ran)."""
    try:
        client.CoreV1Api(api).read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def namespace_conditions(api: client.ApiClient, name: str) -> str:
    """What keeps a terminating namespace alive, from its status conditions (for error messages)."""
    try:
        status = client.CoreV1Api(api).read_namespace(name).status
    except ApiException as error:
        return f"namespace {name}: API error {error.status}"
    conditions = [f"{c.type}: {c.message}" for c in (status.conditions if status else None) or [] if c.status == "True"]
    return f"namespace {name} is {status.phase if status else 'unknown'}: " + ("; ".join(conditions) or "-")
