"""Autoscaling that really scales, on the real node (issue 16): the chart installed with slm-gateway, the metrics
pipeline of tests/cluster/metrics.py (Prometheus, KEDA's operator and adapter, metrics-server), and runtime pods
serving Gemma 3 270M.

1. in-flight scaling: a client loop raises the runtime's in-flight gauge above the target; KEDA's Prometheus
   trigger, through the HPA that KEDA makes, scales the model 1 -> 2; the load stops and it scales back to 1;
2. CPU scaling: the plain HPA on metrics-server's CPU figures scales 1 -> 2 under load and back;
3. the gateway: one endpoint lists the Ready models; the official clients stream through it; an unknown model
   gets each API's 404;
4. scale to zero: an idle model goes to zero replicas (phase ScaledToZero), a burst of requests through the
   gateway wakes it (phase Waking) and every one of them is answered; idle again, it is back at zero;
5. the `slm` CLI reaches the model through the current kube context (the apiserver's service proxy).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import httpx
import ollama
import openai
import pytest
from harness import example
from kubernetes import client
from realnode_stack import RELEASE, Stack, installed_stack, ollama_at, pod_ready
from test_monitoring import panel_queries

from cluster import Cluster
from cluster.metrics import MetricsPipeline
from cluster.realnode import NODE_SELECTOR, TOLERATION, RealNode
from slm_operator.api.gateway import model_id
from slm_operator.render.scaling import keda_hpa_name

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.model]

MODEL = "gemma3:270m"  # spec.model.name of the example
PROMPT = "Count from one to fifty, separated by commas:"
SMALL = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
FAST_SCALING = {"pollingInterval": "1s", "scaleUpStabilization": "0s", "scaleDownStabilization": "5s"}


def manifest(stack: Stack, name: str, autoscaling: dict[str, Any], num_predict: int = 48) -> dict[str, Any]:
    """examples/gemma3-270m.yaml on the real node, one llama.cpp thread per pod (the node has 2 CPUs), autoscaled."""
    slm = example("gemma3-270m.yaml")
    slm["metadata"] = {"name": name, "namespace": stack.team}
    spec = slm["spec"]
    spec["hardware"] = {"accelerator": "cpu", "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]}
    spec["resources"] = SMALL
    spec["parameters"]["numPredict"] = num_predict
    spec["parameters"]["numThread"] = 1
    spec["server"]["drainTimeout"] = "5s"
    spec.pop("replicas", None)
    spec["autoscaling"] = {"enabled": True, **autoscaling}
    return slm


@contextlib.contextmanager
def load(url: str, clients: int) -> Iterator[list[int]]:
    """``clients`` threads streaming generations from ``url`` until the block ends; yields the count answered."""
    answered = [0]
    stop = threading.Event()

    def loop() -> None:
        with ollama_at(url) as ollama_client:
            while not stop.is_set():
                with contextlib.suppress(ollama.ResponseError, httpx.HTTPError):
                    list(ollama_client.generate(model=MODEL, prompt=PROMPT, stream=True))
                    answered[0] += 1

    threads = [threading.Thread(target=loop, name=f"load-{i}", daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    try:
        yield answered
    finally:
        stop.set()
        for thread in threads:
            thread.join(120)


def deployment_replicas(stack: Stack, name: str) -> tuple[int, int]:
    """(spec.replicas, status.readyReplicas) of the model's Deployment."""
    deployment = stack.as_dict(stack.apps.read_namespaced_deployment(name, stack.team))
    return deployment["spec"].get("replicas", 0), (deployment.get("status") or {}).get("readyReplicas") or 0


def events_for(stack: Stack, name: str) -> list[str]:
    items = stack.core.list_namespaced_event(stack.team, field_selector=f"involvedObject.name={name}").items
    return [f"{e.reason}: {e.message}" for e in items]


def _custom(stack: Stack) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(stack.api)


# ---------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def stack(
    real_node: RealNode,
    metrics_pipeline: MetricsPipeline,
    control_plane: Cluster,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """The chart with the gateway, the operator told where KEDA's Prometheus is (the host's, which the KEDA operator,
    a host process here, queries)."""
    values = {
        "settings": {"prometheusUrl": metrics_pipeline.prometheus_url},
        "rbac": {"keda": True},
        "gateway": {"enabled": True, "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]},
    }
    workdir = tmp_path_factory.mktemp("autoscaling")
    with installed_stack(real_node, control_plane, api, workdir, prefix="slm-as", values=values) as stack:
        yield stack


@pytest.fixture(scope="module")
def gateway_url(stack: Stack) -> str:
    service = stack.as_dict(stack.core.read_namespaced_service(f"{RELEASE}-gateway", stack.system))
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    return f"http://{service['spec']['clusterIP']}:{port}"


# ---------------------------------------------------------------------------------------------------- 1. in flight


@pytest.mark.timeout(600)
def test_inflight_requests_scale_out_through_keda_and_back(stack: Stack, metrics_pipeline: MetricsPipeline) -> None:
    name = "busy"
    stack.apply(
        manifest(stack, name, {"minReplicas": 1, "maxReplicas": 2, "targetInflightRequests": 1, **FAST_SCALING})
    )
    stack.ready(name, timeout=300)
    scaled = _custom(stack).get_namespaced_custom_object("keda.sh", "v1alpha1", stack.team, "scaledobjects", name)
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    autoscaling = client.AutoscalingV2Api(stack.api)
    hpas = {h.metadata.name for h in autoscaling.list_namespaced_horizontal_pod_autoscaler(stack.team).items}
    assert hpas == {keda_hpa_name(name)}, hpas  # KEDA's HPA, none of the operator's own
    url = stack.service_url(name)
    with load(url, clients=3) as answered:
        seen = stack.wait(
            "the in-flight gauge above the target in Prometheus",
            lambda: (v := metrics_pipeline.query(query)) and float(v[0]["value"][1]) >= 2 and v,
            90,
        )
        print(f"Prometheus: {query} = {seen[0]['value'][1]}")
        started = time.monotonic()
        stack.wait("2 replicas, both ready", lambda: deployment_replicas(stack, name) == (2, 2) or None, 240)
        print(f"scaled out 1 -> 2 in {time.monotonic() - started:.0f}s under load ({answered[0]} answers so far)")
        assert len([p for p in stack.pods(name) if pod_ready(p)]) == 2
    assert answered[0] > 0
    started = time.monotonic()
    stack.wait("back to 1 replica", lambda: deployment_replicas(stack, name)[0] == 1 or None, 180)
    print(f"scaled back in 2 -> 1 {time.monotonic() - started:.0f}s after the load stopped")
    stack.delete_slm(name)


# ---------------------------------------------------------------------------------------------------- 2. CPU


@pytest.mark.timeout(600)
def test_cpu_utilization_scales_out_through_metrics_server_and_back(stack: Stack) -> None:
    name = "cpu-bound"
    stack.apply(manifest(stack, name, {"minReplicas": 1, "maxReplicas": 2, "targetCPUUtilization": 50, **FAST_SCALING}))
    stack.ready(name, timeout=300)
    autoscaling = client.AutoscalingV2Api(stack.api)
    hpa = stack.as_dict(autoscaling.read_namespaced_horizontal_pod_autoscaler(name, stack.team))
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    with load(stack.service_url(name), clients=2):

        def utilization() -> int | None:
            status = stack.as_dict(autoscaling.read_namespaced_horizontal_pod_autoscaler(name, stack.team))["status"]
            for metric in status.get("currentMetrics") or []:
                if metric["type"] == "Resource":
                    return cast(int, metric["resource"]["current"].get("averageUtilization"))
            return None

        seen = stack.wait("the HPA reading CPU from metrics-server", utilization, 120)
        print(f"HPA: cpu utilization {seen}% of the 200m request")
        stack.wait("2 replicas, both ready", lambda: deployment_replicas(stack, name) == (2, 2) or None, 240)
    stack.wait("back to 1 replica", lambda: deployment_replicas(stack, name)[0] == 1 or None, 180)
    stack.delete_slm(name)


# ---------------------------------------------------------------------------------------------------- 3. gateway


@pytest.mark.timeout(420)
def test_the_gateway_serves_every_ready_model_by_name(stack: Stack, gateway_url: str) -> None:
    names = ("alpha", "beta")
    for name in names:
        stack.apply(manifest(stack, name, {"minReplicas": 1, "maxReplicas": 1, "targetInflightRequests": 4}))
    for name in names:
        stack.ready(name, timeout=300)
    ids = {model_id(stack.team, name) for name in names}
    openai_client = openai.OpenAI(
        base_url=f"{gateway_url}/v1", api_key="unused", http_client=httpx.Client(trust_env=False)
    )
    stack.wait("both models listed", lambda: ids <= {m.id for m in openai_client.models.list()} or None, 60)
    with ollama_at(gateway_url) as ollama_client:
        assert ids <= {m.model for m in ollama_client.list().models}
        for name in names:
            parts = list(
                ollama_client.chat(
                    model=model_id(stack.team, name), messages=[{"role": "user", "content": "Hi"}], stream=True
                )
            )
            assert parts[-1].done and "".join(p.message.content or "" for p in parts)
        with pytest.raises(ollama.ResponseError) as missing:
            ollama_client.generate(model=f"{stack.team}/nope", prompt=PROMPT)
        assert missing.value.status_code == 404
    stream = openai_client.chat.completions.create(
        model=model_id(stack.team, "alpha"), messages=[{"role": "user", "content": "Hi"}], stream=True
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Hi"}])
    for name in names:
        stack.delete_slm(name)


# ---------------------------------------------------------------------------------------------------- 4. zero


@pytest.mark.timeout(600)
def test_an_idle_model_scales_to_zero_and_a_burst_wakes_it(
    stack: Stack, gateway_url: str, metrics_pipeline: MetricsPipeline
) -> None:
    name = "sleepy"
    scaling = {
        "minReplicas": 0,
        "maxReplicas": 1,
        "targetInflightRequests": 8,
        "scaleToZeroAfter": "15s",
        **FAST_SCALING,
    }
    stack.apply(manifest(stack, name, scaling, num_predict=12))
    stack.ready(name, timeout=300)
    started = time.monotonic()
    stack.wait("ScaledToZero", lambda: stack.slm(name)["status"].get("phase") == "ScaledToZero" or None, 180)
    print(f"idle -> zero replicas in {time.monotonic() - started:.0f}s (scaleToZeroAfter 15s)")
    # The phase follows spec.replicas; the last pod's readiness goes a moment later, while it drains.
    stack.wait("no ready pod", lambda: deployment_replicas(stack, name) == (0, 0) or None, 60)
    assert not [p for p in stack.pods(name) if pod_ready(p)]

    phases: set[str] = set()
    watching = threading.Event()

    def watch_phases() -> None:
        while not watching.is_set():
            with contextlib.suppress(Exception):
                phases.add(stack.slm(name)["status"].get("phase"))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch_phases, daemon=True)
    watcher.start()
    model = model_id(stack.team, name)
    http = httpx.Client(trust_env=False, timeout=300)
    openai_client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="unused", http_client=http, max_retries=0)

    # Each returns how its answer finished: the base model may end a reply at once (an empty text is an answer),
    # so "answered" means the request ran to a finish reason rather than that the text is non-empty.
    def via_openai(i: int) -> str:
        answer = openai_client.chat.completions.create(model=model, messages=[{"role": "user", "content": f"Say {i}"}])
        return answer.choices[0].finish_reason or ""

    def via_ollama(i: int) -> str:
        with ollama.Client(host=gateway_url, trust_env=False, timeout=300) as ollama_client:
            chunks = list(ollama_client.generate(model=model, prompt=f"{i},", stream=True))
        return chunks[-1].done_reason or "" if chunks and chunks[-1].done else ""

    woken = time.monotonic()
    calls: list[Callable[[int], str]] = [via_openai, via_ollama] * 4
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda c: c[1](c[0]), enumerate(calls)))
    print(f"{len(answers)} requests at zero answered within {time.monotonic() - woken:.1f}s")
    assert set(answers) <= {"stop", "length"}, answers
    watching.set()
    watcher.join(5)
    assert "Waking" in phases, phases  # seen by the 0.2 s poll: a wake takes seconds
    # Every panel of the dashboard's Gateway row has data from this gateway (upstream errors: only when there are).
    gateway_panels = [(t, e) for t, e in panel_queries() if "slm_gateway_" in e and "upstream_errors" not in e]
    assert gateway_panels
    stack.wait(
        "data in every gateway panel",
        lambda: all(metrics_pipeline.query(expr) for _, expr in gateway_panels) or None,
        60,
    )
    stack.wait("ScaledToZero again", lambda: stack.slm(name)["status"].get("phase") == "ScaledToZero" or None, 180)
    reasons = "\n".join(events_for(stack, name))
    assert "ScaledToZero" in reasons and "Waking" in reasons, reasons
    stack.delete_slm(name)


# ---------------------------------------------------------------------------------------------------- 5. CLI


@pytest.mark.timeout(300)
def test_slm_cli_reaches_a_cluster_model_through_the_kube_context(stack: Stack) -> None:
    name = "cli"
    stack.apply(manifest(stack, name, {"minReplicas": 1, "maxReplicas": 1, "targetInflightRequests": 4}))
    stack.ready(name, timeout=300)
    env = {**os.environ, "KUBECONFIG": str(stack.kubeconfig), "SLM_GATEWAY": "kube"}
    env["SLM_GATEWAY_SERVICE"] = f"{stack.system}/{RELEASE}-gateway"
    slm = [sys.executable, "-m", "slm_operator.cli"]

    def run(*args: str) -> str:
        done = subprocess.run([*slm, *args], env=env, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        return done.stdout

    model = model_id(stack.team, name)
    stack.wait("listed", lambda: model in run("list") or None, 60)
    answer = run("run", model, PROMPT)
    assert answer.strip(), answer
    assert model in run("ps")
    stack.delete_slm(name)
