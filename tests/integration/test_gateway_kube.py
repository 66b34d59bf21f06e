"""slm-gateway's Kubernetes adapter (gateway/slm_gateway/kube.py) against the real kube-apiserver.

No pods and no operator process: the tests write what the operator and the EndpointSlice controller would
(SLMDeployments with a status set through the status subresource, hand-made EndpointSlices of the model's
Service) and check that the catalog the gateway builds from its watches follows; that a namespaced watch sees
only its namespace; that a watch whose connection breaks lists again; that the direct wake mode's writes land on
a Deployment and a ScaledObject as the operator renders and applies them (KEDA's CRD from the `keda` component
of hack/cluster/build-bins.sh), leave every other field alone and survive the operator's next server-side apply;
and that the `slm-gateway` command gets ready from a kubeconfig and lists a Ready model.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import openai
import pytest
import yaml
from harness import ROOT, eventually, example, free_port, install_crd, stop_process
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from cluster import Cluster, binaries
from slm_gateway import kube
from slm_gateway.activator import DirectActivator
from slm_gateway.catalog import Catalog, Delete, Endpoint, Event, Kind, Model, Resync
from slm_operator.api import Accelerator, validate_manifest
from slm_operator.api.gateway import FORCE_ACTIVATION_ANNOTATION, model_id
from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.controller.kube import KubeClient
from slm_operator.render import RenderOptions, render_all
from slm_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster

T = TypeVar("T")
SERVED = "gemma3:270m"  # spec.model.name of the example
SLICE_MANAGER = "gateway-test.slm-operator.io"  # no controller of the cluster touches these EndpointSlices


@pytest.fixture(scope="module", autouse=True)
def crd(api: client.ApiClient) -> None:
    install_crd(api)


@pytest.fixture
def gateway_api(control_plane: Cluster) -> Iterator[client.ApiClient]:
    """The gateway's own client, configured by slm_gateway.kube.api_client from the kubeconfig."""
    with kube.api_client(control_plane.kubeconfig) as api_client:
        yield api_client


# ------------------------------------------------------------------------------------------- objects


def create_slm(api: client.ApiClient, namespace: str, name: str, *, min_replicas: int | None = None) -> dict[str, Any]:
    manifest = copy.deepcopy(example("gemma3-270m.yaml"))
    manifest["metadata"] = {"name": name, "namespace": namespace}
    if min_replicas is not None:
        manifest["spec"]["autoscaling"] = {
            "enabled": True,
            "minReplicas": min_replicas,
            "maxReplicas": 2,
            "targetInflightRequests": 4,
        }
    created: dict[str, Any] = client.CustomObjectsApi(api).create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, manifest
    )
    return created


def set_phase(api: client.ApiClient, namespace: str, name: str, phase: str) -> None:
    """What the operator reports, written through the status subresource."""
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        namespace,
        PLURAL,
        name,
        {"status": {"phase": phase, "model": {"digest": "sha256:" + "ab" * 32, "sizeBytes": 1234}}},
        _content_type="application/merge-patch+json",
    )


def delete_slm(api: client.ApiClient, namespace: str, name: str) -> None:
    client.CustomObjectsApi(api).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def endpoint_slice(service: str, name: str, endpoints: list[tuple[str, bool]], port: int = 11434) -> dict[str, Any]:
    """An EndpointSlice of the Service ``service`` as the EndpointSlice controller writes it, and a port named
    ``metrics`` beside ``http`` that the gateway must ignore."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER},
        },
        "addressType": "IPv4",
        "ports": [
            {"name": "metrics", "port": 9090, "protocol": "TCP"},
            {"name": "http", "port": port, "protocol": "TCP"},
        ],
        "endpoints": [{"addresses": [address], "conditions": {"ready": ready}} for address, ready in endpoints],
    }


def create_slice(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    client.DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, body)


# ------------------------------------------------------------------------------------------- the feed


class Fed:
    """A KubeWatch feeding a Catalog on an event loop of its own thread, as in the gateway; the test thread makes
    blocking API calls and reads the catalog on the loop (:meth:`read`, :meth:`until`)."""

    def __init__(self, api: client.ApiClient, namespaces: tuple[str, ...] = ()) -> None:
        self.catalog = Catalog()
        self.events: list[Event] = []
        self.watch = kube.KubeWatch(api, namespaces)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fed-loop", daemon=True)

    def _apply(self, event: Event) -> None:
        self.events.append(event)
        self.catalog.apply(event)

    def __enter__(self) -> Fed:
        self.thread.start()

        async def start() -> None:
            self.watch.start(self._apply)

        asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.watch.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def read(self, query: Callable[[Catalog], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(query(self.catalog))
            except Exception as exc:  # handed to the test thread
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def until(self, check: Callable[[Catalog], T], what: str, timeout: float = 15) -> T:
        return eventually(lambda: self.read(check), what=what, timeout=timeout, interval=0.05)

    def resyncs(self, kind: Kind) -> list[Resync]:
        return self.read(lambda _: [e for e in self.events if isinstance(e, Resync) and e.kind is kind])


def listed_ids(catalog: Catalog) -> list[str]:
    return [m.id for m in catalog.listed()]


# ------------------------------------------------------------------------------------------- the tests


def test_the_catalog_follows_slmdeployments_and_endpoint_slices(
    api: client.ApiClient, gateway_api: client.ApiClient, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Watches of one second: every step below spans several, each resumed from the last resourceVersion.
    monkeypatch.setattr(kube, "WATCH_SECONDS", 1)
    alpha, beta = model_id(namespace, "alpha"), model_id(namespace, "beta")
    with Fed(gateway_api) as fed:  # every namespace
        fed.until(lambda c: c.ready, "both lists")

        create_slm(api, namespace, "alpha")
        model = fed.until(lambda c: c.get(alpha), "alpha in the catalog")
        assert (model.served_name, model.phase, model.scales_to_zero) == (SERVED, None, False)
        assert alpha not in fed.read(listed_ids)  # no phase yet, no pod

        set_phase(api, namespace, "alpha", "Ready")
        model = fed.until(lambda c: alpha in listed_ids(c) and c.get(alpha), "Ready alpha listed")
        assert (model.phase, model.digest, model.size_bytes) == ("Ready", "sha256:" + "ab" * 32, 1234)
        set_phase(api, namespace, "alpha", "Loading")
        fed.until(lambda c: alpha not in listed_ids(c), "Loading alpha unlisted")

        # Endpoints: the ready addresses on the port named http, from every slice of the Service.
        create_slice(api, namespace, endpoint_slice("alpha", "alpha-a", [("10.1.0.1", True), ("10.1.0.2", False)]))
        fed.until(lambda c: c.endpoints(alpha) == (Endpoint("10.1.0.1", 11434),), "alpha's ready endpoint")
        assert alpha in fed.read(listed_ids)  # a ready pod lists it whatever the phase
        create_slice(api, namespace, endpoint_slice("alpha", "alpha-b", [("10.1.0.3", True)]))
        fed.until(lambda c: len(c.endpoints(alpha)) == 2, "the second slice's endpoint")
        time.sleep(2.5)  # two more watch periods: the next changes arrive through resumed watches
        client.DiscoveryV1Api(api).patch_namespaced_endpoint_slice(
            "alpha-a",
            namespace,
            {"endpoints": [{"addresses": ["10.1.0.1"], "conditions": {"ready": False}}]},
            _content_type="application/merge-patch+json",
        )
        fed.until(lambda c: c.endpoints(alpha) == (Endpoint("10.1.0.3", 11434),), "10.1.0.1 no longer ready")
        client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice("alpha-b", namespace)
        fed.until(lambda c: c.endpoints(alpha) == (), "alpha-b's endpoint gone")
        assert alpha not in fed.read(listed_ids)

        # A model that scales to zero is listed at zero (a request wakes it), and so while waking.
        create_slm(api, namespace, "beta", min_replicas=0)
        set_phase(api, namespace, "beta", "ScaledToZero")
        model = fed.until(lambda c: (m := c.get(beta)) and m.phase == "ScaledToZero" and m, "beta at zero")
        assert model.scales_to_zero and model.at_zero and beta in fed.read(listed_ids)
        set_phase(api, namespace, "beta", "Waking")
        fed.until(lambda c: (m := c.get(beta)) and m.phase == "Waking" and beta in listed_ids(c), "beta waking")
        set_phase(api, namespace, "beta", "Failed")
        fed.until(lambda c: (m := c.get(beta)) and m.failed, "beta Failed")
        assert beta not in fed.read(listed_ids)

        delete_slm(api, namespace, "alpha")
        fed.until(lambda c: c.get(alpha) is None, "alpha deleted")
        # One list per kind: every later watch resumed where the last one ended.
        assert [r.namespace for kind in Kind for r in fed.resyncs(kind)] == [None, None]
        assert fed.read(lambda _: any(isinstance(e, Delete) and e.kind is Kind.SLM for e in fed.events))


class Relay:
    """A TCP relay to the apiserver (TLS passes through untouched) whose connections the test can cut: a watch
    broken by the network, then an outage until :meth:`restore`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.down = threading.Event()
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, name="relay", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return
            if self.down.is_set():
                near.close()
                continue
            far = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Break every connection and refuse new ones."""
        self.down.set()
        with self.lock:
            cut, self.sockets = self.sockets, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def relayed_kubeconfig(kubeconfig: Path, relay: Relay, path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{relay.port}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_namespaced_watch_sees_its_namespace_and_lists_again_after_its_connection_broke(
    api: client.ApiClient, control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    core = client.CoreV1Api(api)
    other = f"{namespace[:50]}-other"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=other)))
    server = httpx.URL(yaml.safe_load(control_plane.kubeconfig.read_text())["clusters"][0]["cluster"]["server"])
    relay = Relay((server.host, server.port or 443))
    try:
        for ns in (namespace, other):
            create_slm(api, ns, "a")
            set_phase(api, ns, "a", "Ready")
            create_slice(api, ns, endpoint_slice("a", "a-1", [("10.2.0.1", True)]))
        a, b = model_id(namespace, "a"), model_id(namespace, "b")
        with (
            kube.api_client(relayed_kubeconfig(control_plane.kubeconfig, relay, tmp_path / "kubeconfig")) as relayed,
            Fed(relayed, (namespace,)) as fed,
        ):
            fed.until(lambda c: c.ready and c.endpoints(a), "the namespace's model and endpoint")
            assert fed.read(lambda c: sorted(c.models)) == [(namespace, "a")]
            assert fed.read(lambda c: c.endpoints(model_id(other, "a"))) == ()
            assert {r.namespace for kind in Kind for r in fed.resyncs(kind)} == {namespace}
            # Both watches are open once a change made after the lists arrives through each.
            set_phase(api, namespace, "a", "Loading")
            create_slice(api, namespace, endpoint_slice("a", "a-2", [("10.2.0.2", True)]))
            fed.until(
                lambda c: len(c.endpoints(a)) == 2 and (m := c.get(a)) is not None and m.phase == "Loading",
                "the first watch events",
            )

            relay.cut()  # both watches break; nothing reaches the gateway until restore()
            for slice_name in ("a-1", "a-2"):
                client.DiscoveryV1Api(api).delete_namespaced_endpoint_slice(slice_name, namespace)
            create_slm(api, namespace, "b")
            set_phase(api, namespace, "b", "Ready")
            create_slm(api, other, "b")
            relay.restore()

            fed.until(lambda c: b in listed_ids(c) and not c.endpoints(a), "the changes made while cut off")
            # Learnt from new lists (the watches failed; a list says what is gone), not from watch events.
            assert [len(fed.resyncs(kind)) for kind in Kind] == [2, 2]
            assert fed.read(lambda c: sorted(c.models)) == [(namespace, "a"), (namespace, "b")]
            assert fed.read(lambda _: not any(isinstance(e, Delete) for e in fed.events))
    finally:
        relay.close()
        core.delete_namespace(other)


def install_scaled_object_crd(api: client.ApiClient) -> None:
    """KEDA's ScaledObject CRD from the build cache (the metrics pipeline applies the same file); a skip when
    hack/cluster/build-bins.sh has not built the `keda` component."""
    path = binaries().keda_crds / "keda.sh_scaledobjects.yaml"
    if not path.is_file():
        pytest.skip(f"no KEDA CRDs at {path.parent}: run hack/cluster/build-bins.sh keda")
    ext = client.ApiextensionsV1Api(api)
    body = yaml.safe_load(path.read_text())
    try:
        ext.create_custom_resource_definition(body)
    except ApiException as exc:
        if exc.status != 409:  # already there (another test, or the metrics pipeline)
            raise

    def established() -> bool:
        crd = ext.read_custom_resource_definition(body["metadata"]["name"])
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    eventually(established, what="the ScaledObject CRD established", timeout=30, interval=0.2)


def managers_of_annotation(obj: dict[str, Any], annotation: str) -> list[str]:
    return [
        entry["manager"]
        for entry in obj["metadata"].get("managedFields") or ()
        if f"f:{annotation}" in (entry.get("fieldsV1") or {}).get("f:metadata", {}).get("f:annotations", {})
    ]


def test_direct_wake_writes_on_the_operator_s_deployment_and_scaled_object(
    api: client.ApiClient, gateway_api: client.ApiClient, namespace: str
) -> None:
    """The objects and the server-side apply are the operator's own (render_all, KubeClient.apply); KEDA's part
    (scaling the Deployment to zero) is played by the test."""
    install_scaled_object_crd(api)
    apps, custom = client.AppsV1Api(api), client.CustomObjectsApi(api)
    created = create_slm(api, namespace, "m", min_replicas=0)
    slm = validate_manifest({key: created[key] for key in ("apiVersion", "kind", "metadata", "spec")})
    settings = OperatorSettings(gateway_service="slm-system/slm-operator-gateway")
    rendered = render_all(slm, settings, RenderOptions(Accelerator.CPU, keda=True))
    owned = [m for m in rendered if m["kind"] in ("Deployment", "ScaledObject")]
    assert [m["kind"] for m in owned] == ["Deployment", "ScaledObject"]
    operator = KubeClient(api, OperatorSettings().field_manager)

    def operator_applies() -> None:  # what each reconcile does
        for manifest in owned:
            operator.apply(copy.deepcopy(manifest))

    def read_scaled_object() -> dict[str, Any]:
        obj: dict[str, Any] = custom.get_namespaced_custom_object(
            kube.KEDA_GROUP, kube.KEDA_VERSION, namespace, kube.SCALED_OBJECTS, "m"
        )
        return obj

    operator_applies()
    apps.patch_namespaced_deployment_scale("m", namespace, {"spec": {"replicas": 0}})  # KEDA took it to zero
    before = read_scaled_object()
    spec_before = apps.read_namespaced_deployment("m", namespace).spec
    assert spec_before.replicas == 0
    activator = DirectActivator(kube.KubeWakeActions(gateway_api), retry_seconds=0.2)
    model = Model(namespace, "m", SERVED, scales_to_zero=True)

    def woken() -> None:
        assert activator.active == {model.id}
        deployment = apps.read_namespaced_deployment("m", namespace)
        assert deployment.spec.replicas == 1
        assert deployment.spec.to_dict() == {**spec_before.to_dict(), "replicas": 1}
        forced = read_scaled_object()
        assert forced["metadata"]["annotations"] == {
            **before["metadata"]["annotations"],
            FORCE_ACTIVATION_ANNOTATION: "true",
        }
        assert managers_of_annotation(forced, FORCE_ACTIVATION_ANNOTATION) == [kube.FIELD_MANAGER]
        assert forced["spec"] == before["spec"] and forced["metadata"]["labels"] == before["metadata"]["labels"]

    def released() -> None:
        assert activator.active == set()
        after = read_scaled_object()
        assert after["metadata"]["annotations"] == before["metadata"]["annotations"]
        assert managers_of_annotation(after, FORCE_ACTIVATION_ANNOTATION) == []
        assert after["spec"] == before["spec"] and after["metadata"]["labels"] == before["metadata"]["labels"]
        assert apps.read_namespaced_deployment("m", namespace).spec.replicas == 1  # KEDA's idle period takes it down

    async def scenario() -> None:  # as the dispatcher drives it: want while a request is held, then release
        await activator.start()
        try:
            activator.want(model)
            await asyncio.wait_for(activator.settled(), 20)
            woken()
            # The operator reconciles meanwhile: its server-side apply leaves the gateway's annotation and the
            # replica count alone (docs/contract.md).
            operator_applies()
            woken()
            activator.release(model.id)
            await asyncio.wait_for(activator.settled(), 20)
            released()
        finally:
            await activator.stop()

    asyncio.run(scenario())

    # From exactly 0: a Deployment something else scaled is left alone; a model without a Deployment or a
    # ScaledObject is no error.
    actions = kube.KubeWakeActions(gateway_api)
    apps.patch_namespaced_deployment_scale("m", namespace, {"spec": {"replicas": 3}})
    actions.activate(namespace, "m")
    assert apps.read_namespaced_deployment("m", namespace).spec.replicas == 3
    actions.deactivate(namespace, "m")
    actions.activate(namespace, "absent")
    actions.deactivate(namespace, "absent")


def test_the_slm_gateway_command_serves_the_models_of_its_kubeconfig_s_cluster(
    api: client.ApiClient, control_plane: Cluster, namespace: str, tmp_path: Path
) -> None:
    create_slm(api, namespace, "ready")
    set_phase(api, namespace, "ready", "Ready")
    create_slm(api, namespace, "loading")
    set_phase(api, namespace, "loading", "Loading")
    keys = tmp_path / "keys.yaml"
    keys.write_text(f"- key: sk-test\n  namespaces: [{namespace}]\n")
    port = free_port()
    log_path = tmp_path / "gateway.log"
    command = [
        *(sys.executable, "-m", "slm_gateway.cli", "--kubeconfig", str(control_plane.kubeconfig)),
        *("--namespace", namespace, "--port", str(port), "--keys-file", str(keys)),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=dict(os.environ))
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                assert process.poll() is None, log_path.read_text()
                return False

        eventually(ready, what="slm-gateway ready", timeout=30, interval=0.1)
        # The CLI's header through the apiserver's service proxy, and the usual bearer token.
        for headers in ({"X-API-Key": "sk-test"}, {}):
            models = openai.OpenAI(base_url=f"{url}/v1", api_key="sk-test", default_headers=headers).models.list()
            assert [m.id for m in models.data] == [model_id(namespace, "ready")]
        assert httpx.get(f"{url}/v1/models").status_code == 401
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(20) == 0, log_path.read_text()
        finally:
            stop_process(process)
