"""The Kubernetes adapter against a fake apiserver (the real control plane checks it end to end elsewhere): the
official client's list-then-watch turned into catalog events, a relist after an expired watch, and the wake
writes with their patch types and field manager."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import yaml
from gateway_fast import endpoint_slice, run, serving, slm, wait_for
from kubernetes import client
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from slm_gateway.catalog import Catalog, Delete, Event, Kind, Resync, Upsert
from slm_gateway.kube import FIELD_MANAGER, KubeWakeActions, KubeWatch
from slm_operator.api.gateway import FORCE_ACTIVATION_ANNOTATION

SLMS = "/apis/slm-operator.io/v1alpha1/slmdeployments"
SLICES = "/apis/discovery.k8s.io/v1/endpointslices"


class FakeApiserver:
    """Lists and watches of SLMDeployments and EndpointSlices from scripted events; records PATCH requests."""

    def __init__(self) -> None:
        self.objects: dict[str, list[dict[str, Any]]] = {SLMS: [slm("ns", "m")], SLICES: []}
        self.watches: dict[str, list[list[dict[str, Any]]]] = {SLMS: [], SLICES: []}
        self.calls: list[tuple[str, str, dict[str, str]]] = []
        self.patches: list[tuple[str, str, Any]] = []
        self.app = Starlette(
            routes=[
                Route(SLMS, self.collection),
                Route(SLICES, self.collection),
                Route("/apis/{rest:path}", self.patch, methods=["PATCH"]),
            ]
        )

    async def collection(self, request: Request) -> Response:
        path = request.url.path
        self.calls.append((path, "watch" if request.query_params.get("watch") else "list", dict(request.query_params)))
        if not request.query_params.get("watch"):
            return JSONResponse({"metadata": {"resourceVersion": "10"}, "items": self.objects[path]})
        script = self.watches[path].pop(0) if self.watches[path] else []

        async def lines() -> Any:
            for event in script:
                yield json.dumps(event) + "\n"
            await asyncio.sleep(0.2)  # then the server ends the watch, as on its timeout

        return StreamingResponse(lines(), media_type="application/json")

    async def patch(self, request: Request) -> Response:
        body = json.loads(await request.body())
        self.patches.append((request.url.path, request.headers["content-type"], body))
        assert request.query_params.get("fieldManager") == FIELD_MANAGER
        if request.url.path.endswith("/scale") and body[0]["op"] == "test":
            return JSONResponse({"kind": "Status", "code": 422, "reason": "Invalid"}, status_code=422)
        return JSONResponse({"kind": "Scale" if "scale" in request.url.path else "ScaledObject"})


def _api(port: int) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    return client.ApiClient(configuration)


def test_list_then_watch_becomes_catalog_events_and_an_expired_watch_lists_again() -> None:
    server = FakeApiserver()
    moved = endpoint_slice("ns", "m", [("10.0.0.1", 11434)])
    moved["metadata"]["resourceVersion"] = "11"
    gone = {**moved, "metadata": {**moved["metadata"], "resourceVersion": "13"}}
    server.watches[SLICES] = [
        [
            {"type": "ADDED", "object": moved},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            {"type": "DELETED", "object": gone},
        ],
        [{"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "14"}}}],
        [{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}}],
    ]
    server.watches[SLMS] = [[{"type": "MODIFIED", "object": slm("ns", "m", phase="Loading")}]]
    events: list[Event] = []
    catalog = Catalog()

    def apply(event: Event) -> None:
        events.append(event)
        catalog.apply(event)

    async def scenario() -> None:
        async with serving(server.app, lifespan="off") as port:
            feed = KubeWatch(_api(port))
            feed.start(apply)
            try:
                await wait_for(
                    lambda: sum(isinstance(e, Resync) and e.kind is Kind.SLICE for e in events) >= 2, "relist"
                )
            finally:
                feed.stop()

    run(scenario)
    slices = [e for e in events if e.kind is Kind.SLICE]
    assert isinstance(slices[0], Resync) and slices[0].namespace is None
    assert isinstance(slices[1], Upsert) and isinstance(slices[2], Delete)
    assert isinstance(slices[3], Resync)  # after the 410
    assert any(isinstance(e, Upsert) and e.kind is Kind.SLM for e in events)
    assert catalog.ready and catalog.models[("ns", "m")].phase == "Loading"
    slice_watches = [params for path, kind, params in server.calls if path == SLICES and kind == "watch"]
    # Each watch resumes where the last ended (a bookmark moves it on too); after the 410, a list comes first.
    assert [w["resourceVersion"] for w in slice_watches[:3]] == ["10", "13", "14"]
    assert slice_watches[0]["allowWatchBookmarks"] == "true"


def test_namespaced_watches_list_each_namespace() -> None:
    async def scenario() -> None:
        app = Starlette(
            routes=[
                Route(
                    "/apis/{group}/{version}/namespaces/{namespace}/{plural}",
                    lambda r: JSONResponse({"metadata": {"resourceVersion": "1"}, "items": []}),
                )
            ]
        )
        events: list[Event] = []
        async with serving(app, lifespan="off") as port:
            feed = KubeWatch(_api(port), ("team-a", "team-b"))
            feed.start(events.append)
            try:
                await wait_for(lambda: len([e for e in events if isinstance(e, Resync)]) >= 4, "four lists")
            finally:
                feed.stop()
        assert {(e.kind, e.namespace) for e in events if isinstance(e, Resync)} == {
            (kind, ns) for kind in Kind for ns in ("team-a", "team-b")
        }

    run(scenario)


def test_wake_writes_annotate_the_scaled_object_and_scale_from_exactly_zero() -> None:
    server = FakeApiserver()

    async def scenario() -> None:
        async with serving(server.app, lifespan="off") as port:
            actions = KubeWakeActions(_api(port))
            await asyncio.to_thread(actions.activate, "ns", "m")  # the scale's test op fails (422): not at 0
            await asyncio.to_thread(actions.deactivate, "ns", "m")

    run(scenario)
    annotate, scale, remove = server.patches
    assert annotate == (
        "/apis/keda.sh/v1alpha1/namespaces/ns/scaledobjects/m",
        "application/merge-patch+json",
        {"metadata": {"annotations": {FORCE_ACTIVATION_ANNOTATION: "true"}}},
    )
    assert scale[0] == "/apis/apps/v1/namespaces/ns/deployments/m/scale"
    assert scale[1] == "application/json-patch+json"
    assert scale[2] == [
        {"op": "test", "path": "/spec/replicas", "value": 0},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    assert remove[2] == {"metadata": {"annotations": {FORCE_ACTIVATION_ANNOTATION: None}}}


def test_the_slm_gateway_command_serves_the_models_of_its_kubeconfig_s_cluster(tmp_path: Path) -> None:
    server = FakeApiserver()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    async def scenario() -> None:
        async with serving(server.app, lifespan="off") as api_port, httpx.AsyncClient() as http:
            kubeconfig = tmp_path / "kubeconfig"
            kubeconfig.write_text(
                yaml.safe_dump(
                    {
                        "apiVersion": "v1",
                        "kind": "Config",
                        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{api_port}"}}],
                        "users": [{"name": "fake", "user": {"token": "t"}}],
                        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
                        "current-context": "fake",
                    }
                )
            )
            command = [sys.executable, "-m", "slm_gateway.cli", "--kubeconfig", str(kubeconfig), "--port", str(port)]
            process = await asyncio.create_subprocess_exec(*command, env={**os.environ, "SLM_GATEWAY_WAKE": "metric"})
            try:

                async def ready() -> bool:
                    try:
                        return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
                    except httpx.TransportError:
                        return False

                for _ in range(400):
                    if await ready():
                        break
                    await asyncio.sleep(0.05)
                models = (await http.get(f"http://127.0.0.1:{port}/v1/models")).json()
                assert [m["id"] for m in models["data"]] == ["ns/m"]
            finally:
                process.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(process.wait(), 15) == 0

    run(scenario)
