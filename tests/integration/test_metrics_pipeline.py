"""The autoscaling metrics pipeline beside the real node (tests/cluster/metrics.py), with real objects:

- metrics-server serves CPU and memory of a pod running on the real node (metrics.k8s.io, `kubectl top`);
- Prometheus scrapes a Service labelled app.kubernetes.io/part-of=slm-operator on its `http` port, and the
  series carry the ServiceMonitor labels the operator's KEDA triggers select on;
- a KEDA ScaledObject with a Prometheus trigger scales a Deployment 1 -> 2 -> 1 through the HPA that KEDA
  creates, which reads the external metrics API served by the KEDA adapter.

The workload is hack/cluster/images/testserver: `/set?name=&value=` sets a gauge that its /metrics exports.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import httpx
import pytest
from kubernetes import client

from cluster import Cluster, binaries, wait_until
from cluster.images import http_image
from cluster.metrics import PART_OF_LABEL, PART_OF_VALUE, SCRAPE_PORT_NAME, MetricsPipeline
from cluster.realnode import NODE_NAME, NODE_SELECTOR, TOLERATION, RealNode

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.timeout(300)]

APP = "web"
PORT = 8080
METRIC = "slm_requests_inflight"  # the runtime's in-flight gauge, as the operator's triggers query it
THRESHOLD = 5


def _deployment(image: str) -> client.V1Deployment:
    labels = {"app": APP}
    container = {
        "name": APP,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        # FILE is the binary itself: ready at once (the tests only use /set and /metrics).
        "args": ["serve", f":{PORT}", "/testserver"],
        "ports": [{"name": SCRAPE_PORT_NAME, "containerPort": PORT}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": SCRAPE_PORT_NAME}, "periodSeconds": 1},
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    body = {
        "metadata": {"name": APP, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": NODE_SELECTOR,
                    "tolerations": [TOLERATION],
                    "terminationGracePeriodSeconds": 2,
                    "containers": [container],
                },
            },
        },
    }
    deployment = client.V1Deployment.from_dict(body)
    assert deployment is not None
    return deployment


def _service() -> client.V1Service:
    body = {
        "metadata": {"name": APP, "labels": {"app": APP, PART_OF_LABEL: PART_OF_VALUE}},
        "spec": {
            "selector": {"app": APP},
            "ports": [{"name": SCRAPE_PORT_NAME, "port": PORT, "targetPort": SCRAPE_PORT_NAME}],
        },
    }
    service = client.V1Service.from_dict(body)
    assert service is not None
    return service


def _ready_pods(core: client.CoreV1Api, namespace: str) -> list[client.V1Pod]:
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={APP}").items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
    ]


def _start_app(real_node: RealNode, api: client.ApiClient, namespace: str) -> client.V1Pod:
    """The testserver Deployment (one pod on the real node) behind a Service Prometheus scrapes."""
    image = http_image()
    real_node.import_image(image.archive)
    client.AppsV1Api(api).create_namespaced_deployment(namespace, _deployment(image.reference))
    core = client.CoreV1Api(api)
    core.create_namespaced_service(namespace, _service())
    pods = wait_until("the pod to be Ready on the real node", lambda: _ready_pods(core, namespace), 90)
    assert pods[0].spec.node_name == NODE_NAME
    return pods[0]


def _set_gauge(pod: client.V1Pod, value: float) -> None:
    url = f"http://{pod.status.pod_ip}:{PORT}/set"
    response = httpx.get(url, params={"name": METRIC, "value": value}, timeout=5, trust_env=False)
    response.raise_for_status()


def _pod_metrics(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        metrics: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
            "metrics.k8s.io", "v1beta1", namespace, "pods", name
        )
    except client.ApiException as error:
        if error.status == 404:  # not scraped twice yet
            return None
        raise
    return metrics if metrics.get("containers") else None


_SUFFIXES = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value: str) -> float:
    """A Kubernetes quantity ("12345n", "8", "1500m", "2Mi") as a number."""
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * _SUFFIXES[suffix]
    return float(value)


def test_the_metrics_api_reports_cpu_and_memory_of_a_pod_on_the_real_node(
    metrics_pipeline: MetricsPipeline,
    real_node: RealNode,
    api: client.ApiClient,
    control_plane: Cluster,
    namespace: str,
) -> None:
    pod = _start_app(real_node, api, namespace)
    name = pod.metadata.name
    metrics = wait_until(
        f"metrics.k8s.io to report pod {name}", lambda: _pod_metrics(api, namespace, name), 60, interval=1
    )
    (usage,) = [container["usage"] for container in metrics["containers"] if container["name"] == APP]
    assert _quantity(usage["cpu"]) >= 0, usage
    assert _quantity(usage["memory"]) > 0, usage

    top = subprocess.run(
        [str(binaries().kubectl), f"--kubeconfig={control_plane.kubeconfig}", "top", "pod", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert top.returncode == 0, top.stderr
    header, *rows = top.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "CPU(cores)", "MEMORY(bytes)"]
    assert [row.split()[0] for row in rows] == [name]


def _series(pipeline: MetricsPipeline, promql: str) -> list[dict[str, Any]] | None:
    return pipeline.query(promql) or None


def _replicas(api: client.ApiClient, namespace: str) -> tuple[int, int]:
    deployment = client.AppsV1Api(api).read_namespaced_deployment(APP, namespace)
    return deployment.spec.replicas, deployment.status.ready_replicas or 0


def _hpa_state(api: client.ApiClient, namespace: str) -> str:
    """The HPAs and KEDA's events in the namespace, for a timeout's message."""
    hpas = client.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace).items
    lines = []
    for hpa in hpas:
        status = hpa.status
        conditions = [f"{c.type}={c.status} ({c.reason}: {c.message})" for c in (status.conditions or [])]
        current = [m.to_dict() for m in (status.current_metrics or [])]
        lines.append(f"hpa {hpa.metadata.name}: desired={status.desired_replicas} metrics={current} {conditions}")
    events = client.CoreV1Api(api).list_namespaced_event(namespace).items
    lines += [f"event {e.involved_object.kind}/{e.involved_object.name} {e.reason}: {e.message}" for e in events]
    return "\n".join(lines)


def _scaled_object(pipeline: MetricsPipeline, namespace: str) -> dict[str, Any]:
    fast = {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 100, "periodSeconds": 1}]}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": APP},
        "spec": {
            "scaleTargetRef": {"name": APP},
            "pollingInterval": 1,
            "cooldownPeriod": 5,
            "minReplicaCount": 1,
            "maxReplicaCount": 2,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleUp": fast, "scaleDown": fast}}},
            "triggers": [
                {
                    "type": "prometheus",
                    "metadata": {
                        "serverAddress": pipeline.prometheus_url,
                        "query": f'sum({METRIC}{{namespace="{namespace}",service="{APP}"}})',
                        "threshold": str(THRESHOLD),
                    },
                }
            ],
        },
    }


def test_a_keda_prometheus_trigger_scales_a_deployment_up_and_down_through_its_hpa(
    metrics_pipeline: MetricsPipeline, real_node: RealNode, api: client.ApiClient, namespace: str
) -> None:
    pod = _start_app(real_node, api, namespace)
    _set_gauge(pod, 0)

    # Prometheus finds the pod through the Service's EndpointSlice and labels it like a ServiceMonitor does.
    selector = f'{METRIC}{{namespace="{namespace}",service="{APP}"}}'
    (series,) = wait_until(f"Prometheus to scrape {selector}", lambda: _series(metrics_pipeline, selector), 30)
    labels = series["metric"]
    assert labels["pod"] == pod.metadata.name, labels
    assert (labels["container"], labels["endpoint"], labels["job"]) == (APP, SCRAPE_PORT_NAME, APP), labels
    assert labels["instance"] == f"{pod.status.pod_ip}:{PORT}", labels

    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", _scaled_object(metrics_pipeline, namespace)
    )
    autoscaling = client.AutoscalingV2Api(api)
    hpa = wait_until(
        "KEDA to create the HPA",
        lambda: autoscaling.list_namespaced_horizontal_pod_autoscaler(namespace).items,
        30,
    )[0]
    external = hpa.spec.metrics[0].external
    assert hpa.spec.scale_target_ref.name == APP and external is not None

    # The HPA's metric, read the way the HPA controller reads it: the external metrics API (KEDA's adapter).
    def external_value() -> float | None:
        match = ",".join(f"{k}={v}" for k, v in (external.metric.selector.match_labels or {}).items())
        response = client.CustomObjectsApi(api).list_namespaced_custom_object(
            "external.metrics.k8s.io", "v1beta1", namespace, external.metric.name, label_selector=match
        )
        items = response.get("items") or []
        return _quantity(items[0]["value"]) if items else None

    _set_gauge(pod, 8)
    value = wait_until("the external metric to read 8", lambda: external_value() == 8 or None, 30, interval=0.5)
    assert value

    try:
        wait_until("the Deployment to scale to 2 ready replicas", lambda: _replicas(api, namespace) == (2, 2), 75, 1)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_hpa_state(api, namespace)}") from None

    _set_gauge(pod, 0)
    try:
        wait_until("the Deployment to scale back to 1", lambda: _replicas(api, namespace)[0] == 1, 75, 1)
    except AssertionError as error:
        raise AssertionError(f"{error}\n{_hpa_state(api, namespace)}") from None
    scaled_object = client.CustomObjectsApi(api).get_namespaced_custom_object(
        "keda.sh", "v1alpha1", namespace, "scaledobjects", APP
    )
    ready = {c["type"]: c["status"] for c in scaled_object["status"]["conditions"]}
    assert ready.get("Ready") == "True", json.dumps(scaled_object["status"])
