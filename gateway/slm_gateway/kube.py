"""The Kubernetes side, kept thin: client configuration, the watches that feed the catalog, the wake writes.

- :func:`api_client`: in-cluster configuration in a pod, else the kubeconfig (``--kubeconfig``, $KUBECONFIG,
  ~/.kube/config).
- :class:`KubeWatch`: one thread per (kind, namespace) doing list-then-watch with the official client, handing
  each event to the event loop as a plain dict (:class:`~slm_gateway.catalog.Resync` after every list,
  Upsert/Delete after) so the loop never blocks on the apiserver. An expired watch (410) lists again; any other
  failure lists again after a backoff.
- :class:`KubeWakeActions`: the direct wake mode's writes: a merge patch of the ScaledObject's force-activation
  annotation, and the Deployment's scale subresource from exactly 0 to 1: read, then a merge patch carrying the
  resourceVersion read (409 when the Deployment changed in between: read again), so a Deployment that something
  else scaled meanwhile is left alone. Field manager ``slm-gateway``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from slm_gateway.catalog import Delete, Event, Kind, Resync, Upsert
from slm_operator.api.gateway import FORCE_ACTIVATION_ANNOTATION
from slm_operator.api.resource import GROUP, PLURAL, VERSION

__all__ = ["FIELD_MANAGER", "KubeWakeActions", "KubeWatch", "api_client"]

log = logging.getLogger(__name__)

FIELD_MANAGER = "slm-gateway"
KEDA_GROUP, KEDA_VERSION, SCALED_OBJECTS = "keda.sh", "v1alpha1", "scaledobjects"
WATCH_SECONDS = 300
"""Each watch call ends after this long and resumes from its last resourceVersion."""
BACKOFF_SECONDS = (1, 2, 5, 10, 30)
SCALE_CONFLICT_TRIES = 5


def api_client(kubeconfig: Path | None = None) -> client.ApiClient:
    """A client for the cluster: in-cluster in a pod (unless a kubeconfig is given), else the kubeconfig."""
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig) if kubeconfig else None, client_configuration=configuration)
    return client.ApiClient(configuration)


def _raw_list(call: Callable[..., Any], *args: Any) -> tuple[list[dict[str, Any]], str]:
    response = call(*args, _preload_content=False)
    data = json.loads(response.data)
    return list(data.get("items") or ()), str(data.get("metadata", {}).get("resourceVersion") or "")


class KubeWatch:
    """The catalog feed from the apiserver; see the module docstring."""

    def __init__(self, api: client.ApiClient, namespaces: tuple[str, ...] = ()) -> None:
        self._api = api
        self._namespaces: tuple[str | None, ...] = namespaces or (None,)
        self._stopping = threading.Event()
        self._watches: list[watch.Watch] = []

    def _list_call(self, kind: Kind, namespace: str | None) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        if kind is Kind.SLM:
            custom = client.CustomObjectsApi(self._api)
            if namespace is None:
                return custom.list_cluster_custom_object, (GROUP, VERSION, PLURAL)
            return custom.list_namespaced_custom_object, (GROUP, VERSION, namespace, PLURAL)
        discovery = client.DiscoveryV1Api(self._api)
        if namespace is None:
            return discovery.list_endpoint_slice_for_all_namespaces, ()
        return discovery.list_namespaced_endpoint_slice, (namespace,)

    def start(self, apply: Callable[[Event], None]) -> None:
        loop = asyncio.get_running_loop()

        def emit(event: Event) -> None:
            if not self._stopping.is_set():  # after stop() the loop may be closed
                loop.call_soon_threadsafe(apply, event)

        for kind in Kind:
            for namespace in self._namespaces:
                name = f"slm-gateway-watch-{kind.value}-{namespace or 'all'}"
                threading.Thread(target=self._run, args=(kind, namespace, emit), name=name, daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        for w in list(self._watches):
            w.stop()

    def _run(self, kind: Kind, namespace: str | None, emit: Callable[[Event], None]) -> None:
        call, args = self._list_call(kind, namespace)
        failures = 0
        while not self._stopping.is_set():
            try:
                items, version = _raw_list(call, *args)
                emit(Resync(kind, namespace, tuple(items)))
                failures = 0
                while not self._stopping.is_set():
                    version = self._watch(kind, call, args, version, emit)
            except ApiException as exc:
                if self._stopping.is_set():
                    return
                if exc.status == 410:
                    log.info("%s watch expired, listing again", kind.value)
                    continue
                failures += 1
                log.warning("%s watch failed (%s %s), retrying", kind.value, exc.status, exc.reason)
            except Exception:
                if self._stopping.is_set():  # stop() shut the watch's socket
                    return
                failures += 1
                log.warning("%s watch failed, retrying", kind.value, exc_info=True)
            self._stopping.wait(BACKOFF_SECONDS[min(failures, len(BACKOFF_SECONDS)) - 1])

    def _watch(
        self,
        kind: Kind,
        call: Callable[..., Any],
        args: tuple[Any, ...],
        version: str,
        emit: Callable[[Event], None],
    ) -> str:
        """Watch from ``version`` until the server ends the call; the last resourceVersion seen."""
        w = watch.Watch()
        self._watches.append(w)
        if self._stopping.is_set():  # stop() ran before this watch was registered
            self._watches.remove(w)
            return version
        try:
            for event in w.stream(
                call,
                *args,
                resource_version=version,
                timeout_seconds=WATCH_SECONDS,
                allow_watch_bookmarks=True,
            ):
                # raw_object: the dict as sent (the client's ERROR handling needs deserialize on, which also
                # builds typed objects that the catalog does not use).
                obj: Mapping[str, Any] = event.get("raw_object") or {}
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                kind_of_event = event.get("type")
                if kind_of_event in ("ADDED", "MODIFIED"):
                    emit(Upsert(kind, obj))
                elif kind_of_event == "DELETED":
                    emit(Delete(kind, obj))
                if self._stopping.is_set():
                    break
        finally:
            self._watches.remove(w)
        return version


class KubeWakeActions:
    """The direct wake mode's writes (blocking; slm_gateway.activator runs them in a thread)."""

    def __init__(self, api: client.ApiClient) -> None:
        self._custom = client.CustomObjectsApi(api)
        self._apps = client.AppsV1Api(api)

    def _annotate(self, namespace: str, name: str, value: str | None) -> None:
        try:
            self._custom.patch_namespaced_custom_object(
                KEDA_GROUP,
                KEDA_VERSION,
                namespace,
                SCALED_OBJECTS,
                name,
                {"metadata": {"annotations": {FORCE_ACTIVATION_ANNOTATION: value}}},
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status != 404:
                raise
            log.info("%s/%s has no ScaledObject: nothing to force-activate", namespace, name)

    def activate(self, namespace: str, name: str) -> None:
        self._annotate(namespace, name, "true")
        self._scale_from_zero(namespace, name)

    def _scale_from_zero(self, namespace: str, name: str) -> None:
        """Scale the Deployment to 1 if it is at 0; leave it alone otherwise (or when it does not exist).

        The Scale of a Deployment at 0 has ``spec: {}`` (autoscaling/v1 omits a zero ``replicas``), so a JSON
        patch testing ``/spec/replicas`` for 0 always fails; the test is done here on the Scale read, and the
        write carries its resourceVersion, which makes it fail (409) if the Deployment changed meanwhile."""
        for _ in range(SCALE_CONFLICT_TRIES):
            try:
                scale = self._apps.read_namespaced_deployment_scale(name, namespace)
                if scale.spec is not None and scale.spec.replicas:
                    return  # not at zero: scaled by something else
                read_version = scale.metadata.resource_version if scale.metadata is not None else None
                if not read_version:
                    raise RuntimeError(f"the Scale of {namespace}/{name} came without a resourceVersion")
                self._apps.patch_namespaced_deployment_scale(
                    name,
                    namespace,
                    {"metadata": {"resourceVersion": read_version}, "spec": {"replicas": 1}},
                    field_manager=FIELD_MANAGER,
                    _content_type="application/merge-patch+json",
                )
            except ApiException as exc:
                if exc.status == 404:
                    log.info("%s/%s has no Deployment: nothing to scale", namespace, name)
                    return
                if exc.status == 409:  # changed since read (a status update, or a scale): read again
                    continue
                raise
            log.info("scaled %s/%s from 0 to 1", namespace, name)
            return
        raise RuntimeError(f"the Deployment {namespace}/{name} kept changing while it was scaled from 0")

    def deactivate(self, namespace: str, name: str) -> None:
        self._annotate(namespace, name, None)
