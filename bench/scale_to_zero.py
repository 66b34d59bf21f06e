#!/usr/bin/env python3
"""Scale to zero through slm-gateway on the real node: cold start from zero replicas to the first token, split
into its steps; the gateway's two wake modes; prefix affinity with two replicas.

    .venv/bin/python bench/scale_to_zero.py [--rounds 2] [--wake-blocks direct,metric,direct] [--trials 5]
                                            [--prefix-tokens 1000] [--threads 2] [--settle 3]
                                            [--out .state/bench/scale_to_zero.json]

Setup: a control plane of its own (tests/cluster) with the real node, the metrics pipeline of
tests/cluster/metrics.py (Prometheus scraping every 1 s, KEDA's operator and adapter, metrics-server) and the chart
installed as tests/integration/test_real_node_autoscaling.py installs it (realnode_stack.installed_stack: the
images built by hack/images/build.sh and imported into the node, the operator and slm-gateway on the node,
gateway.wake.mode=direct, prefix affinity off). Every model is examples/gemma3-270m.yaml on the real node
(greedy, --threads llama.cpp threads, one slot).

Part 1, cold start and part 2, wake modes: two models that scale to zero (minReplicas 0, maxReplicas 1,
scaleToZeroAfter --idle, KEDA pollingInterval 1 s): "cached" keeps its model cache on a shared claim (a static
hostPath PersistentVolume) that its first start filled, so a new pod's `model-pull` init container finds the
model there; "not cached" has the default emptyDir cache, so every new pod's init container builds the model
again from the package in the runtime image (copied and hashed into the cache; no network). Each round waits
until the model is at zero (phase ScaledToZero, Deployment at 0, no pod left), then streams one /api/generate
through the gateway's Service and reads to the end. The two models alternate, so one goes back to zero while the
other is measured. --wake-blocks runs the rounds once per block, the gateway switched between blocks with
`helm upgrade --reuse-values --set gateway.wake.mode=...` (rollout waited for, old gateway pod gone).

The steps of one cold start, from marks on the host's wall clock (the apiserver, the kubelet and this process
share it):

- scale-up: request sent (the client) -> the Deployment's spec.replicas is 1 (a watch, ms);
- scheduling: -> the pod bound to the node (a pod watch, ms; the ReplicaSet controller creates the pod first);
- pod start: -> the `model-pull` init container's startedAt (pod sandbox, CNI, container start);
- model pull: `model-pull` startedAt -> finishedAt;
- runtime start: -> the runtime container's startedAt;
- load: -> "model ... ready in" in the runtime's log (CRI timestamp; model load and one warm-up token);
- readiness: -> the pod Ready (pod watch, ms; the startup probe runs every 5 s);
- first token: -> the first streamed line at the client (endpoint to the gateway's watch, forwarding, prompt,
  first token).

Container startedAt/finishedAt come from the pod status, which has one-second resolution (truncated), so the
steps next to them are each off by up to a second (a step may even read slightly negative); the total (client
monotonic clock) and the steps between watch marks are exact to a few ms. `pull_log_s` (the init container's
first to last log line, CRI nanoseconds) gives the pull's own duration precisely. The real node's logs (kubelet,
containerd, kube-proxy) are kept beside --out (`<name>-logs/`) to explain outliers.

Part 3, prefix affinity: a model with 2 replicas (no autoscaling) and the runtime's prompt cache on (its default;
spec.pod.env SLM_PROMPT_CACHE=true here all the same, so the figure does not depend on it). For each
trial a new ~--prefix-tokens-token prefix (a distinct text; its length checked with prompt_eval_count), one
request with it and a first suffix, then the measured request: the same prefix, another suffix. Streaming
/api/generate (raw, so the prompt is exactly the text) through the gateway, TTFT at the client; the pod that
answered each request from the runtime's own request counter on each pod (/metrics on the pod IP). Affinity off
then on (`helm upgrade --set gateway.prefixAffinity.enabled=...`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import benchlib
import httpx
from _cluster import REPO_ROOT
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))  # realnode_stack, harness

from harness import example
from realnode_stack import CHART, PORT, RELEASE, Stack, body, conditions, container_status, installed_stack, pod_ready

from cluster import Cluster, ControlPlane, kube
from cluster.metrics import MetricsPipeline
from cluster.realnode import NODE_SELECTOR, TOLERATION, RealNode
from slm_operator.api.gateway import model_id

log = logging.getLogger("bench.scale_to_zero")

SERVED = "gemma3:270m"  # spec.model.name of the example: what the runtime logs and answers to
CACHED, NOT_CACHED = "cached", "not_cached"
MODELS = {CACHED: "cold-cached", NOT_CACHED: "cold-fresh"}
AFFINITY_MODEL = "prefix"
CACHE_CLAIM = "bench-model-cache"
NONROOT = 65532
PHASES = (
    "scale-up",
    "scheduling",
    "pod start",
    "model pull",
    "runtime start",
    "load",
    "readiness",
    "first token",
)
COLD_PROMPT = "Say hello."
_VOCABULARY = (
    "lighthouse keeper harbour storm lamp ship night wave rock island coast wind rain fog bell rope boat "
    "sail anchor tide moon star cliff gull net fisher village market bread salt stone path garden window "
    "door table letter winter summer autumn spring morning evening river bridge road mountain forest "
    "field meadow horse cart clock candle book story song voice silence shadow light colour blue green "
    "grey silver golden old young quiet careful slow patient distant near bright dark warm cold heavy "
    "small large"
)
WORDS = _VOCABULARY.split()


def progress(message: str) -> None:
    log.info("%s", message)


# --- the cluster -------------------------------------------------------------------------------------------------


def cache_volume(stack: Stack, path: Path) -> str:
    """A static hostPath PersistentVolume bound in advance to the team's claim CACHE_CLAIM, and that claim."""
    name = f"slm-bench-stz-cache-{stack.suffix}"
    volume = {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "2Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": name,
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": stack.team, "name": CACHE_CLAIM},
        },
    }
    claim = {
        "metadata": {"name": CACHE_CLAIM},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": name,
            "volumeName": name,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }
    stack.core.create_persistent_volume(body(volume))
    stack.core.create_namespaced_persistent_volume_claim(stack.team, body(claim))
    return name


@contextlib.contextmanager
def cluster(work: Path, keep_logs: Path | None) -> Iterator[tuple[Stack, MetricsPipeline]]:
    """A control plane with the real node, the metrics pipeline and the chart with the gateway; all removed
    afterwards (the release and namespaces by installed_stack, the pipeline, node and control plane here), the
    real node's logs (kubelet, containerd, kube-proxy) first copied to ``keep_logs``."""
    state = REPO_ROOT / ".state" / "cluster" / f"bench-stz-{os.getpid()}"
    plane = ControlPlane(state, progress=progress, attached=True)
    volumes: list[str] = []
    try:
        plane.start()
        node: RealNode = plane.real_node(progress=progress)
        node.start(claim_timeout=240)
        pipeline = plane.metrics_pipeline(progress=progress)
        pipeline.start()
        values = {
            "settings": {"prometheusUrl": pipeline.prometheus_url},
            "rbac": {"keda": True},
            "gateway": {
                "enabled": True,
                "nodeSelector": dict(NODE_SELECTOR),
                "tolerations": [dict(TOLERATION)],
                "wake": {"mode": "direct"},
                "prefixAffinity": {"enabled": False},
            },
        }
        cache = work / "cache"
        cache.mkdir(mode=0o755)
        os.chown(cache, NONROOT, NONROOT)  # hostPath volumes get no fsGroup ownership change
        with (
            kube.api_client(plane.kubeconfig) as api,
            installed_stack(
                node,
                Cluster(plane.kubeconfig, plane, owned=True),
                api,
                work,
                prefix="slm-stz",
                values=values,
                before_install=lambda stack: volumes.append(cache_volume(stack, cache)),
            ) as stack,
        ):
            try:
                yield stack, pipeline
            finally:
                for name in volumes:
                    with contextlib.suppress(ApiException):
                        stack.core.delete_persistent_volume(name)
    finally:
        if keep_logs is not None:
            shutil.rmtree(keep_logs, ignore_errors=True)
            keep_logs.mkdir(parents=True)
            for name, path in plane.real_node().log_files().items():
                with contextlib.suppress(OSError):
                    shutil.copy(path, keep_logs / f"{name}.log")
        plane.destroy()  # the metrics pipeline and the real node first


def gateway_url(stack: Stack) -> str:
    service = stack.as_dict(stack.core.read_namespaced_service(f"{RELEASE}-gateway", stack.system))
    (port,) = [p["port"] for p in service["spec"]["ports"] if p["name"] == "http"]
    return f"http://{service['spec']['clusterIP']}:{port}"


def gateway_pods(stack: Stack) -> list[dict[str, Any]]:
    selector = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=gateway"
    return [stack.as_dict(p) for p in stack.core.list_namespaced_pod(stack.system, label_selector=selector).items]


def set_gateway(stack: Stack, url: str, **settings: str) -> float:
    """`helm upgrade --reuse-values --set gateway.<key>=<value>...`, waited for: the gateway rolled out, its old
    pod gone, the new one's arguments as asked and the Service answering. Returns the seconds it took."""
    started = time.monotonic()
    sets = [arg for key, value in settings.items() for arg in ("--set", f"gateway.{key}={value}")]
    stack.helm(
        "upgrade", RELEASE, str(CHART), "-n", stack.system, "--reuse-values", *sets, "--wait", "--timeout", "180s"
    )

    def rolled_out() -> bool:
        pods = gateway_pods(stack)
        if len(pods) != 1 or not pod_ready(pods[0]):
            return False
        args = pods[0]["spec"]["containers"][0].get("args") or []
        flags = {"wake.mode": "--wake", "prefixAffinity.enabled": "--prefix-affinity"}
        return all(args[args.index(flags[key]) + 1] == value for key, value in settings.items())

    stack.wait("the gateway rolled out", rolled_out, 120)
    stack.wait("the gateway's Service answering", lambda: _answers(f"{url}/api/version"), 60)
    took = time.monotonic() - started
    log.info("gateway set to %s in %.0fs", settings, took)
    return took


def _answers(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2, trust_env=False).status_code == 200
    return False


def manifest(stack: Stack, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """examples/gemma3-270m.yaml on the real node, greedy, small requests."""
    slm = example("gemma3-270m.yaml")
    slm["metadata"] = {"name": name, "namespace": stack.team}
    spec = slm["spec"]
    spec["hardware"] = {"accelerator": "cpu", "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]}
    spec["resources"] = {"requests": {"cpu": "200m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    spec["parameters"] = {
        "temperature": 0,
        "repeatPenalty": 1.0,
        "numThread": args.threads,
        "contextLength": 2048,
        "numPredict": 8,
    }
    spec["server"] = {"port": PORT, "parallel": 1, "maxQueue": 16, "drainTimeout": "1s"}
    return slm


def scale_to_zero_manifest(stack: Stack, name: str, args: argparse.Namespace, *, cached: bool) -> dict[str, Any]:
    slm = manifest(stack, name, args)
    spec = slm["spec"]
    spec.pop("replicas", None)
    spec["autoscaling"] = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 1,
        "targetInflightRequests": 8,
        "scaleToZeroAfter": args.idle,
        "pollingInterval": "1s",
        "scaleUpStabilization": "0s",
        "scaleDownStabilization": "5s",
    }
    if cached:
        spec["cache"] = {"volume": "persistentVolumeClaim", "claimName": CACHE_CLAIM}
    return slm


# --- watches ---------------------------------------------------------------------------------------------------


class Recorder:
    """Local wall-clock times of what watches on the team namespace's Deployments and pods saw (compact)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        apps, core = stack.apps, stack.core
        self._threads = [
            threading.Thread(target=self._run, args=("deployment", apps.list_namespaced_deployment), daemon=True),
            threading.Thread(target=self._run, args=("pod", core.list_namespaced_pod), daemon=True),
        ]

    def __enter__(self) -> Recorder:
        for thread in self._threads:
            thread.start()
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @staticmethod
    def _compact(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        if kind == "deployment":
            return {"name": meta.get("name"), "replicas": spec.get("replicas") or 0}
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (obj.get("status") or {}).get("conditions") or []
        )
        return {
            "name": meta.get("name"),
            "instance": (meta.get("labels") or {}).get("app.kubernetes.io/instance"),
            "node": spec.get("nodeName"),
            "ready": ready,
        }

    def _run(self, kind: str, call: Callable[..., Any]) -> None:
        version: str | None = None
        while not self._stop.is_set():
            stream = watch.Watch()
            kwargs: dict[str, Any] = {"timeout_seconds": 120}
            if version:
                kwargs["resource_version"] = version
            try:
                for event in stream.stream(call, self.stack.team, **kwargs):
                    now = time.time()
                    obj = event.get("raw_object") or {}
                    version = (obj.get("metadata") or {}).get("resourceVersion") or version
                    if event.get("type") in ("ADDED", "MODIFIED"):
                        with self._lock:
                            self.events.append((now, kind, self._compact(kind, obj)))
                    if self._stop.is_set():
                        stream.stop()
                        break
            except ApiException as error:
                if error.status == 410:
                    version = None
                time.sleep(0.2)
            except Exception:  # a dropped connection: watch again from the last version
                time.sleep(0.2)

    def first(self, kind: str, after: float, match: Callable[[dict[str, Any]], bool]) -> float | None:
        with self._lock:
            return next((t for t, k, obj in self.events if k == kind and t >= after and match(obj)), None)


# --- requests --------------------------------------------------------------------------------------------------


def generate(url: str, model: str, prompt: str, num_predict: int, *, raw: bool = False) -> dict[str, Any]:
    """One streaming /api/generate, read to the end: monotonic times sent, first line, end; the final line."""
    payload = {
        "model": model,
        "prompt": prompt,
        "stream": True,
        "raw": raw,
        "options": {"temperature": 0, "num_predict": num_predict},
    }
    timeout = httpx.Timeout(360, connect=5)
    sent = time.monotonic()
    wall = time.time()
    first: float | None = None
    final: dict[str, Any] = {}
    text: list[str] = []
    with httpx.stream("POST", f"{url}/api/generate", json=payload, timeout=timeout, trust_env=False) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"/api/generate for {model}: HTTP {reply.status_code}: {reply.read()[:300]!r}")
        for line in reply.iter_lines():
            if not line.strip():
                continue
            if first is None:
                first = time.monotonic()
            data = json.loads(line)
            text.append(data.get("response") or "")
            if data.get("done"):
                final = data
    end = time.monotonic()
    if first is None or not final:
        raise RuntimeError(f"/api/generate for {model}: the stream ended without a final line")
    return {"sent": sent, "sent_wall": wall, "first": first, "end": end, "final": final, "text": "".join(text)}


# --- part 1 and 2: cold starts ----------------------------------------------------------------------------------


def _stamp(value: str | None) -> float | None:
    """An RFC 3339 time of the API (second resolution, or the CRI's nanoseconds in log lines) as epoch seconds."""
    if not value:
        return None
    whole, _, fraction = value.removesuffix("Z").removesuffix("+00:00").partition(".")  # the API's: UTC
    return datetime.fromisoformat(whole + "+00:00").timestamp() + float(f"0.{fraction or 0}")


def deployment_replicas(stack: Stack, name: str) -> int:
    deployment = stack.as_dict(stack.apps.read_namespaced_deployment(name, stack.team))
    return int(deployment["spec"].get("replicas") or 0)


def wait_at_zero(stack: Stack, name: str, timeout: float = 240) -> float:
    """Until the model is ScaledToZero with its Deployment at 0 and no pod left; the seconds waited."""
    started = time.monotonic()

    def at_zero() -> bool:
        phase = (stack.slm(name).get("status") or {}).get("phase")
        return phase == "ScaledToZero" and deployment_replicas(stack, name) == 0 and not stack.pods(name)

    stack.wait(f"{name} at zero replicas, no pod left", at_zero, timeout)
    return time.monotonic() - started


def cold_start(
    stack: Stack, recorder: Recorder, url: str, args: argparse.Namespace, *, cache: str, mode: str, block: int
) -> dict[str, Any]:
    name = MODELS[cache]
    waited = wait_at_zero(stack, name)
    benchlib.settle(args.settle)
    request = generate(url, model_id(stack.team, name), COLD_PROMPT, 8)
    sent_wall = request["sent_wall"]

    def wall(monotonic: float) -> float:
        return float(sent_wall + (monotonic - request["sent"]))

    (pod,) = stack.pods(name)  # fetched at once: the idle period then takes it away
    pod_name = pod["metadata"]["name"]
    runtime_log = stack.logs(stack.team, pod_name, "runtime", "--timestamps").splitlines()
    pull_log = [line for line in stack.logs(stack.team, pod_name, "model-pull", "--timestamps").splitlines() if line]
    loaded_line = next(line for line in runtime_log if f"model {SERVED} ready in" in line)
    pull = container_status(pod, "model-pull", init=True)["state"]["terminated"]
    runtime = container_status(pod, "runtime")["state"]["running"]
    pod_conditions = conditions(pod)

    def mine(obj: dict[str, Any]) -> bool:
        return bool(obj["name"] == pod_name)

    marks = {
        "sent": sent_wall,
        "scaled": recorder.first("deployment", sent_wall, lambda o: o["name"] == name and o["replicas"] >= 1),
        "scheduled": recorder.first("pod", sent_wall, lambda o: mine(o) and bool(o["node"])),
        "pull_started": _stamp(pull["startedAt"]),
        "pull_finished": _stamp(pull["finishedAt"]),
        "runtime_started": _stamp(runtime["startedAt"]),
        "model_loaded": _stamp(loaded_line.split(" ", 1)[0]),
        "ready": recorder.first("pod", sent_wall, lambda o: mine(o) and o["ready"]),
        "first_token": wall(request["first"]),
    }
    missing = [key for key, value in marks.items() if value is None]
    if missing:
        raise RuntimeError(f"{name}: no time for {missing} (watch events: {len(recorder.events)})")
    times = list(marks.values())
    phases = {phase: round(b - a, 3) for phase, a, b in zip(PHASES, times[:-1], times[1:], strict=True)}
    status_times = {
        f"{kind} (lastTransitionTime)": pod_conditions.get(kind, {}).get("lastTransitionTime")
        for kind in ("PodScheduled", "Initialized", "Ready")
    }
    result = {
        "model": name,
        "cache": cache,
        "mode": mode,
        "block": block,
        "waited_for_zero_s": round(waited, 1),
        "total_s": round(request["first"] - request["sent"], 3),
        "phases_s": phases,
        "pull_found_cached": bool(json.loads(pull.get("message") or "{}").get("cached")),
        "pull_log_s": round(_stamp(pull_log[-1].split(" ", 1)[0]) - _stamp(pull_log[0].split(" ", 1)[0]), 3)  # type: ignore[operator]
        if pull_log
        else None,
        "runtime_says": loaded_line[loaded_line.index(f"model {SERVED} ready in") :].strip(),
        "pod_status_times": status_times,
        "answer": request["text"],
    }
    log.info(
        "%s, %s mode: first token %.2fs after the request at zero; %s",
        cache,
        mode,
        result["total_s"],
        ", ".join(f"{k} {v:.2f}" for k, v in phases.items()),
    )
    return result


def cold_starts(stack: Stack, recorder: Recorder, url: str, args: argparse.Namespace) -> dict[str, Any]:
    for cache, name in MODELS.items():
        stack.apply(scale_to_zero_manifest(stack, name, args, cached=cache == CACHED))
    # KEDA's initialCooldownPeriod (= scaleToZeroAfter) counts from the ScaledObject's creation, so a short idle
    # period takes a new model to zero before its first pod is Ready. One unmeasured wake each, then: it fills the
    # cached model's claim (and the node's page cache with the image's layers, as any later start finds them).
    warm_up: dict[str, float] = {}
    for name in MODELS.values():
        wait_at_zero(stack, name, timeout=300)
        request = generate(url, model_id(stack.team, name), COLD_PROMPT, 8)
        warm_up[name] = round(request["first"] - request["sent"], 3)
        log.info("warm-up wake of %s: first token after %.1fs", name, warm_up[name])
    rounds: list[dict[str, Any]] = []
    switches: list[dict[str, Any]] = []
    mode = "direct"
    for block, wanted in enumerate(args.wake_blocks):
        if wanted != mode:
            switches.append({"to": wanted, "seconds": round(set_gateway(stack, url, **{"wake.mode": wanted}), 1)})
            mode = wanted
        for index in range(args.rounds):
            order = (CACHED, NOT_CACHED) if index % 2 == 0 else (NOT_CACHED, CACHED)
            for cache in order:
                log.info("block %d (%s), round %d of %d: %s", block + 1, mode, index + 1, args.rounds, cache)
                rounds.append(cold_start(stack, recorder, url, args, cache=cache, mode=mode, block=block))
    if mode != "direct":
        set_gateway(stack, url, **{"wake.mode": "direct"})
    for name in MODELS.values():
        stack.delete_slm(name)
    summary: dict[str, Any] = {}
    for cache in MODELS:
        mine = [r for r in rounds if r["cache"] == cache and r["mode"] == "direct"]
        summary[cache] = {
            "n": len(mine),
            "total_s": benchlib.spread([r["total_s"] for r in mine]),
            "phases_s": {p: benchlib.spread([r["phases_s"][p] for r in mine]) for p in PHASES},
            "pull_log_s": benchlib.spread([r["pull_log_s"] for r in mine if r["pull_log_s"] is not None]),
            "pull_found_cached": [r["pull_found_cached"] for r in mine],
        }
    modes: dict[str, Any] = {}
    for mode_name in dict.fromkeys(args.wake_blocks):
        modes[mode_name] = {
            cache: {
                "n": len(mine),
                "total_s": benchlib.spread([r["total_s"] for r in mine]),
                "scale_up_s": benchlib.spread([r["phases_s"]["scale-up"] for r in mine]),
            }
            for cache in MODELS
            if (mine := [r for r in rounds if r["cache"] == cache and r["mode"] == mode_name])
        }
    return {
        "by_cache": summary,
        "wake_modes": {**modes, **recommend(modes)},
        "warm_up_s": warm_up,
        "switches": switches,
        "rounds": rounds,
    }


def recommend(modes: dict[str, Any]) -> dict[str, Any]:
    """Keep `direct` unless `metric` measured faster (median time to the first token, both caches)."""
    direct, metric = modes.get("direct") or {}, modes.get("metric") or {}
    compared = [c for c in (CACHED, NOT_CACHED) if c in direct and c in metric]
    if not compared:
        return {"recommended": "direct", "why": "metric not measured"}
    faster = [c for c in compared if metric[c]["total_s"]["median"] < direct[c]["total_s"]["median"]]
    differences = {c: round(metric[c]["total_s"]["median"] - direct[c]["total_s"]["median"], 3) for c in compared}
    choice = "metric" if len(faster) == len(compared) else "direct"
    return {"recommended": choice, "metric_minus_direct_median_s": differences}


# --- part 3: prefix affinity ------------------------------------------------------------------------------------


def document(trial: int, words: int, nonce: str) -> str:
    """A distinct text of ``words`` words (its own start, so its prefix hashes on its own)."""
    rng = random.Random(f"{nonce}-{trial}")
    body = " ".join(rng.choice(WORDS) for _ in range(words))
    return f"Document {trial} ({nonce}). {body}"


def served_counts(pods: dict[str, str]) -> dict[str, float]:
    """Requests each pod's runtime finished (slm_requests_total, all outcomes), from its /metrics."""
    counts = {}
    for name, ip in pods.items():
        text = httpx.get(f"http://{ip}:{PORT}/metrics", timeout=5, trust_env=False).text
        counts[name] = sum(
            float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("slm_requests_total{")
        )
    return counts


def answered_by(pods: dict[str, str], before: dict[str, float]) -> str:
    after = served_counts(pods)
    (pod,) = [name for name in pods if after[name] > before[name]] or ["?"]
    return pod


def prefix_affinity(stack: Stack, url: str, args: argparse.Namespace) -> dict[str, Any]:
    slm = manifest(stack, AFFINITY_MODEL, args)
    slm["spec"]["replicas"] = 2
    slm["spec"]["cache"] = {"volume": "persistentVolumeClaim", "claimName": CACHE_CLAIM}
    slm["spec"]["pod"] = {"env": [{"name": "SLM_PROMPT_CACHE", "value": "true"}]}
    stack.apply(slm)
    stack.rolled_out(AFFINITY_MODEL, replicas=2, timeout=300)
    pods = {p["metadata"]["name"]: p["status"]["podIP"] for p in stack.pods(AFFINITY_MODEL)}
    model = model_id(stack.team, AFFINITY_MODEL)
    nonce = f"{random.getrandbits(32):08x}"
    # The prefix's length in tokens: one request of a known number of words, straight to a pod (raw prompt).
    probe_words = 400
    first_ip = next(iter(pods.values()))
    calibration = generate(f"http://{first_ip}:{PORT}", SERVED, document(-1, probe_words, nonce), 1, raw=True)
    per_word = calibration["final"]["prompt_eval_count"] / probe_words
    words = round(args.prefix_tokens / per_word)
    log.info("%.2f tokens per word: %d words for a %d-token prefix", per_word, words, args.prefix_tokens)
    stack.wait("the gateway routing to both pods", lambda: _both_reachable(url, model, pods), 60)
    modes: dict[str, Any] = {}
    switch_seconds: dict[str, float] = {}
    for trial_base, enabled in ((0, False), (1000, True)):
        label = "on" if enabled else "off"
        switch_seconds[label] = round(set_gateway(stack, url, **{"prefixAffinity.enabled": str(enabled).lower()}), 1)
        trials = []
        for trial in range(trial_base, trial_base + args.trials):
            benchlib.settle(args.settle)
            text = document(trial, words, nonce)
            before = served_counts(pods)
            earlier = generate(url, model, f"{text}\n\nQuestion A: what is the first word above?\n", 4, raw=True)
            earlier_pod = answered_by(pods, before)
            before = served_counts(pods)
            measured = generate(url, model, f"{text}\n\nQuestion B: how many lamps are named above?\n", 4, raw=True)
            measured_pod = answered_by(pods, before)
            trials.append(
                {
                    "prompt_tokens": measured["final"]["prompt_eval_count"],
                    "earlier_ttft_ms": round((earlier["first"] - earlier["sent"]) * 1000, 1),
                    "ttft_ms": round((measured["first"] - measured["sent"]) * 1000, 1),
                    "earlier_prompt_eval_ms": round(earlier["final"].get("prompt_eval_duration", 0) / 1e6, 1),
                    "prompt_eval_ms": round(measured["final"].get("prompt_eval_duration", 0) / 1e6, 1),
                    "earlier_pod": earlier_pod,
                    "pod": measured_pod,
                    "same_pod": earlier_pod == measured_pod,
                }
            )
            log.info("affinity %s, trial %d: %s", label, trial - trial_base + 1, trials[-1])
        modes[label] = {
            "n": len(trials),
            "ttft_ms": benchlib.spread([t["ttft_ms"] for t in trials], 1),
            "earlier_ttft_ms": benchlib.spread([t["earlier_ttft_ms"] for t in trials], 1),
            "prompt_eval_ms": benchlib.spread([t["prompt_eval_ms"] for t in trials], 1),
            "same_pod": sum(t["same_pod"] for t in trials),
            "trials": trials,
        }
    stack.delete_slm(AFFINITY_MODEL)
    off, on = modes["off"]["ttft_ms"]["median"], modes["on"]["ttft_ms"]["median"]
    return {
        "prefix_tokens": round(words * per_word),
        "prompt_tokens": statistics.median(t["prompt_tokens"] for m in modes.values() for t in m["trials"]),
        "prompt_cache": "on (the runtime's default, and spec.pod.env SLM_PROMPT_CACHE=true)",
        "replicas": 2,
        "modes": modes,
        "ratio_off_on": round(off / on, 2) if on else None,
        "switch_seconds": switch_seconds,
    }


def _both_reachable(url: str, model: str, pods: dict[str, str]) -> bool:
    """Two short requests through the gateway (least in flight takes turns) reached two different pods."""
    seen = set()
    for _ in range(2):
        before = served_counts(pods)
        generate(url, model, "Hi", 1, raw=True)
        seen.add(answered_by(pods, before))
    return len(seen) == 2


# --- main -------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=2, help="cold starts per model in each wake block")
    parser.add_argument(
        "--wake-blocks",
        type=lambda text: [m.strip() for m in text.split(",") if m.strip()],
        default=["direct", "metric", "direct"],
        help="wake modes in order, comma-separated (direct, metric)",
    )
    parser.add_argument("--trials", type=int, default=5, help="prefix-affinity trials per setting")
    parser.add_argument("--prefix-tokens", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=2, help="llama.cpp threads per pod")
    parser.add_argument("--idle", default="10s", help="scaleToZeroAfter of the cold-start models")
    parser.add_argument("--settle", type=float, default=3, help=benchlib.SETTLE_HELP)
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "scale_to_zero.json")
    args = parser.parse_args()
    if not set(args.wake_blocks) <= {"direct", "metric"}:
        parser.error(f"--wake-blocks: direct or metric, not {args.wake_blocks}")
    return args


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    benchlib.stop_on_sigterm()
    params = {k: v for k, v in vars(args).items() if k != "out"} | {"model": SERVED}
    result = benchlib.header("scale_to_zero", params)
    work = Path(tempfile.mkdtemp(prefix="slm-bench-stz-"))
    work.chmod(0o755)
    try:
        with cluster(work, args.out.with_name(f"{args.out.stem}-logs")) as (stack, _pipeline):
            result["setup_s"] = {k: round(v, 1) for k, v in stack.timings.items()}
            url = gateway_url(stack)
            with Recorder(stack) as recorder:
                result["cold_start"] = cold_starts(stack, recorder, url, args)
            result["prefix_affinity"] = prefix_affinity(stack, url, args)
    except (RuntimeError, TimeoutError, httpx.HTTPError, ApiException, AssertionError) as error:
        log.error("scale-to-zero benchmark failed: %s", error)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    benchlib.finish(result, args.out)
    cold, affinity = result["cold_start"], result["prefix_affinity"]
    print(
        "scale to zero: first token from zero (direct) cached "
        f"{cold['by_cache'][CACHED]['total_s']['median']:.1f} s, not cached "
        f"{cold['by_cache'][NOT_CACHED]['total_s']['median']:.1f} s; wake mode: {cold['wake_modes']['recommended']}; "
        f"prefix affinity TTFT off/on {affinity['ratio_off_on']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
