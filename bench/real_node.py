#!/usr/bin/env python3
"""The runtime on the real node of the test control plane: in a pod against the same runtime on the host, and the
time from `kubectl apply` to the first answered request.

    .venv/bin/python bench/real_node.py [--runs 7] [--tokens 64] [--threads 2] [--context-length 2048]
                                        [--rounds 3] [--settle 5] [--foreign 0.2]
                                        [--out .state/bench/real_node.json]

Setup: a control plane of its own (tests/cluster) with the real node (containerd, runc, the pinned kubelet and
kube-proxy), the operator and cpu runtime images built by hack/images/build.sh and imported into the node, the
CRD, and `slm operator run` as a host process whose settings name the built runtime image. Every SLMDeployment
is examples/gemma3-270m.yaml placed on the real node (nodeSelector and toleration) with requests of 100m CPU and
512Mi (no CPU limit: the pod may use both cores, as the host process does).

Part 1, pod vs host: the same Gemma 3 270M Q4_K_M bytes (the pod's from the image's package, the host's from the
models cache), the same `slm-runtime serve` settings (--threads, --context-length, one slot, temperature 0,
repeat penalty 1.0), one streaming /v1/completions at a time from this process: to the pod on its pod IP (veth
and bridge), to host processes on loopback. "host" loads the image's own llama.cpp build (the portable wheel,
no -march=native, unpacked onto PYTHONPATH): the same runtime as in the pod. "host_native" loads the virtual
environment's build for this CPU (AVX-512 here), which shows what the portable build costs by itself. Runs
rotate the order of the three after a warm-up each, with the quiet-machine rules of bench/benchlib.py (the pod's
processes count as the benchmark's own CPU, not as other work). Figures: decode tokens/s per side and the
per-run ratio pod/host, TTFT per side and the per-run difference pod - host; the same for host/host_native.

Part 2, `kubectl apply` to the first answer on a warm node (image present): --rounds times with the model not
cached (an empty cache claim) and cached (the claim the previous apply filled). The cache is a static hostPath
PersistentVolume with a claim of its own (spec.cache.claimName). A pod watch records when the pod was created,
bound and Ready (local clock); the init container's and the runtime's logs (CRI timestamps, nanoseconds, the same
clock) when their processes did what; a client polls the Service's ClusterIP with a one-token /api/generate
until it is answered. The kubelet publishes container states only about once a second, hence the logs:

- reconcile: apply -> the pod exists (the operator's Deployment, the ReplicaSet controller);
- scheduling: pod created -> bound to the node;
- sandbox + image + pull start: bound -> the pull's first log line (pod sandbox and CNI; no image pull, the
  image is present and the kubelet's event says so; container start; Python start of `slm-runtime pull`);
- model pull: the pull's first -> last log line (the packaged model assembled and hashed into the cache, or
  found there);
- runtime start: pull done -> "loading model" in the runtime's log (container start, Python and imports);
- load + warm-up: "loading model" -> "model ... ready" (the runtime's own measure: the model load and one
  warm-up token; its log has no line between the two);
- readiness: model ready -> pod Ready (the readiness probe's period is 5 s);
- endpoint + first answer: pod Ready -> the first request answered through the Service (kube-proxy's rules).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import benchlib
import httpx
import yaml
from _cluster import OPERATOR_NAMESPACE, REPO_ROOT, BenchOperator
from benchlib import Timing
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

sys.path.insert(0, str(REPO_ROOT / "tests" / "integration"))  # realnode_images

from realnode_images import project_images, split_reference

from cluster import ControlPlane, binaries, kube
from cluster.realnode import NODE_SELECTOR, TOLERATION, RealNode
from slm_operator.api.resource import GROUP, PLURAL, VERSION
from slm_operator.crd import crd_manifest

log = logging.getLogger("bench.real_node")
T = TypeVar("T")

NAMESPACE = "slm-bench-realnode"
MODEL_NAME = "bench"  # what benchlib.completion_body asks for
PORT = 11434
CACHE_CLAIM = "bench-cache"
PHASES = (
    "reconcile",
    "scheduling",
    "sandbox + image + pull start",
    "model pull",
    "runtime start",
    "load + warm-up",
    "readiness",
    "endpoint + first answer",
)


def progress(message: str) -> None:
    log.info("%s", message)


# --- the cluster -----------------------------------------------------------------------------------------------


class Bench:
    """The control plane with its real node, the images, the operator; what both parts share."""

    def __init__(self, plane: ControlPlane, node: RealNode, api: client.ApiClient, volumes: Path) -> None:
        self.plane, self.node, self.api, self.volumes = plane, node, api, volumes
        self.core = client.CoreV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [str(binaries().kubectl), f"--kubeconfig={self.plane.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args[:3])}: {done.stderr.strip()}")
        return done.stdout

    def apply(self, manifest: dict[str, Any]) -> None:
        self.kubectl("apply", "--server-side", "--field-manager=bench", "-f", "-", stdin=yaml.safe_dump(manifest))

    def slm_status(self, name: str) -> dict[str, Any]:
        slm = self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)
        return dict(slm.get("status") or {}) if isinstance(slm, dict) else {}

    def pods(self, name: str) -> list[client.V1Pod]:
        selector = f"app.kubernetes.io/instance={name}"
        return list(self.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items)

    def delete(self, name: str, timeout: float = 120) -> None:
        """Delete an SLMDeployment and wait until it, its Service (a new one gets another ClusterIP) and its pods
        are gone."""
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name)

        def gone() -> bool:
            return (
                kube.missing(lambda: self.custom.get_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, name))
                and kube.missing(lambda: self.core.read_namespaced_service(name, NAMESPACE))
                and not self.pods(name)
            )

        wait_for(f"{name}, its Service and its pods gone", gone, timeout)

    def service_url(self, name: str) -> str | None:
        try:
            ip = self.core.read_namespaced_service(name, NAMESPACE).spec.cluster_ip  # type: ignore[union-attr]
        except ApiException:
            return None
        return f"http://{ip}:{PORT}"


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ApiException):
            if result := check():
                return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def install_crd(api: client.ApiClient) -> None:
    ext = client.ApiextensionsV1Api(api)
    with contextlib.suppress(ApiException):
        ext.create_custom_resource_definition(crd_manifest())  # type: ignore[arg-type]

    def established() -> bool:
        crd = api.sanitize_for_serialization(ext.read_custom_resource_definition(f"{PLURAL}.{GROUP}"))
        return any(
            c["type"] == "Established" and c["status"] == "True" for c in crd.get("status", {}).get("conditions") or []
        )

    wait_for("the CRD established", established, 60)


def host_volume(path: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": "slm-bench-realnode-cache"},
        "spec": {
            "capacity": {"storage": "2Gi"},
            "accessModes": ["ReadWriteMany"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "slm-bench-realnode",
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": NAMESPACE, "name": CACHE_CLAIM},
        },
    }


@contextlib.contextmanager
def cluster(work: Path) -> Iterator[tuple[Bench, BenchOperator]]:
    """A control plane with the real node, the images imported, the operator running; all stopped afterwards."""
    state = REPO_ROOT / ".state" / "cluster" / f"bench-realnode-{os.getpid()}"
    plane = ControlPlane(state, progress=progress, attached=True)
    plane.start()
    node = plane.real_node(progress=progress)
    operator: BenchOperator | None = None
    try:
        node.start(claim_timeout=240)
        images = project_images(node, progress)
        with kube.api_client(plane.kubeconfig) as api:
            core = client.CoreV1Api(api)
            for namespace in (NAMESPACE, OPERATOR_NAMESPACE):
                core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            install_crd(api)
            cache = work / "cache"
            cache.mkdir(mode=0o755)
            os.chown(cache, 65532, 65532)
            core.create_persistent_volume(host_volume(cache))  # type: ignore[arg-type]
            claim = {
                "metadata": {"name": CACHE_CLAIM},
                "spec": {
                    "accessModes": ["ReadWriteMany"],
                    "storageClassName": "slm-bench-realnode",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            core.create_namespaced_persistent_volume_claim(NAMESPACE, claim)  # type: ignore[arg-type]
            repository, tag = split_reference(images.runtime)
            settings = work / "settings.yaml"
            settings.write_text(
                yaml.safe_dump(
                    {
                        "runtimeImage": f"{repository}:{tag}",
                        "imagePullPolicy": "IfNotPresent",
                        "defaultRequests": {"cpu": "100m", "memory": "512Mi"},
                        "startupTimeoutSeconds": 120,
                    }
                )
            )
            os.environ["SLM_OPERATOR_CONFIG"] = str(settings)
            operator = BenchOperator(plane.kubeconfig, work / "operator", "slm-bench-realnode", resync_seconds=2)
            operator.work_dir.mkdir(parents=True, exist_ok=True)
            operator.start()
            operator.wait_leading(120)
            yield Bench(plane, node, api, work), operator
    finally:
        if operator is not None:
            operator.stop()
        plane.destroy()


def manifest(name: str, args: argparse.Namespace, *, cached_claim: bool) -> dict[str, Any]:
    """examples/gemma3-270m.yaml on the real node, greedy, the benchmark's threads and context."""
    slm: dict[str, Any] = yaml.safe_load((REPO_ROOT / "examples" / "gemma3-270m.yaml").read_text())
    slm["metadata"] = {"name": name, "namespace": NAMESPACE}
    spec = slm["spec"]
    spec["model"]["name"] = MODEL_NAME
    spec["parameters"] = {
        "temperature": 0,
        "repeatPenalty": 1.0,
        "numThread": args.threads,
        "contextLength": args.context_length,
    }
    spec["hardware"] = {"accelerator": "cpu", "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]}
    spec["resources"] = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
    spec["server"] = {"port": PORT, "parallel": 1, "maxQueue": 16, "drainTimeout": "1s"}
    if cached_claim:
        spec["cache"] = {"volume": "persistentVolumeClaim", "claimName": CACHE_CLAIM}
    return slm


# --- part 1: pod vs host ----------------------------------------------------------------------------------------


def portable_llama(work: Path) -> Path:
    """The image's llama.cpp build (the portable llama-cpp-python wheel hack/images/build.sh compiled for it, no
    -march=native) unpacked for the host: PYTHONPATH=<it> makes the host runtime load it instead of the virtual
    environment's own build (compiled for this CPU)."""
    wheels = sorted((benchlib.cache_home() / "wheels").glob("llama-cpp-python-*-portable/llama_cpp_python-*.whl"))
    if not wheels:
        raise RuntimeError("no portable llama-cpp-python wheel under the cache: hack/images/build.sh runtime-cpu")
    target = work / "portable-llama"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        wheel.extractall(target)
    return target


def llama_features(python_path: Path | None) -> str:
    """llama.cpp's CPU features line (SSE3 = 1 | AVX2 = 1 ...) of the build a host runtime loads."""
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    env = {**os.environ, "PYTHONPATH": str(python_path)} if python_path else None
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return done.stdout.strip()


def host_server(args: argparse.Namespace, name: str, python_path: Path | None) -> benchlib.Server:
    """`slm-runtime serve` on the host with the settings the pod gets (threads, context, one slot, greedy)."""
    port = benchlib.free_port()
    command = ["env", f"PYTHONPATH={python_path}"] if python_path else []
    command += [sys.executable, "-m", "slm_runtime.cli", "--log-level", "WARNING", "serve"]
    command += ["--model", str(benchlib.default_model()), "--port", str(port), "--model-name", MODEL_NAME]
    command += ["--parallel", "1", "--threads", str(args.threads), "--context-length", str(args.context_length)]
    command += ["--temperature", "0", "--repeat-penalty", "1.0"]
    return benchlib.Server(name, command, "/readyz", port)


class PodAwareForeign(benchlib.Foreign):
    """benchlib.Foreign that also counts the pod's processes as ours: the runtime in the pod is not a child of
    this process (containerd's shim starts it), so benchlib's own-tree accounting would call its CPU "other work"
    and redo every run."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        super().__init__()
        self._own = self._ticks()

    def _ticks(self) -> int:
        pod = sum(benchlib._process_ticks(member) for pid in self.pids for member in benchlib._tree(pid))
        return benchlib._own_ticks() + pod

    def share(self) -> float:
        idle, total = benchlib._cpu_ticks()
        spent = total - self._total
        if spent <= 0:
            return 0.0
        busy = spent - (idle - self._idle)
        return round(min(1.0, max(0.0, (busy - (self._ticks() - self._own)) / spent)), 3)


def clean_runs(measure: Callable[[int], T], pids: list[int], args: argparse.Namespace) -> benchlib.Clean[T]:
    """benchlib.clean_runs with the pod's processes counted as ours (PodAwareForeign)."""
    attempts: list[tuple[float, int, T]] = []
    tries = 0
    while sum(share <= args.foreign for share, _, _ in attempts) < args.runs and tries < 2 * args.runs:
        tries += 1
        benchlib.settle(args.settle)
        foreign = PodAwareForeign(pids)
        try:
            result = measure(tries)
        except benchlib.TooSlowError as error:
            log.info("run abandoned: %s", error)
            continue
        share = foreign.share()
        log.info("other work used %.0f%% of the CPUs during that run", share * 100)
        attempts.append((share, tries, result))
    kept = sorted(sorted(attempts, key=lambda a: a[0])[: args.runs], key=lambda a: a[1])
    return benchlib.Clean([r for _, _, r in kept], [s for s, _, _ in kept], tries - len(kept))


def pod_pids(bench: Bench, pod: client.V1Pod) -> list[int]:
    """Host PIDs of the pod's running containers (their init processes), from containerd."""
    data = bench.api.sanitize_for_serialization(pod)
    ids = {s["containerID"].removeprefix("containerd://") for s in data["status"].get("containerStatuses") or []}
    rows = [line.split() for line in bench.node.ctr("tasks", "ls").stdout.splitlines()[1:]]
    return [int(row[1]) for row in rows if len(row) >= 3 and row[0] in ids]


def one_run(url: str, text: str, tokens: int, limit: float) -> Timing:
    timings, _ = asyncio.run(benchlib.wave(url, [benchlib.completion_body(text, tokens)], limit))
    return timings[0]


def pod_vs_host(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    """The runtime in the pod against the same runtime and llama.cpp build on the host ("host"), and the host's
    own build for this CPU ("host_native") to show what the portable build costs by itself."""
    name = "bench-pod"
    bench.apply(manifest(name, args, cached_claim=False))
    wait_for(f"{name} Ready", lambda: bench.slm_status(name).get("phase") == "Ready", 300)
    (pod,) = bench.pods(name)
    pod_name = bench.api.sanitize_for_serialization(pod)["metadata"]["name"]
    pod_url = f"http://{bench.api.sanitize_for_serialization(pod)['status']['podIP']}:{PORT}"
    portable = portable_llama(bench.volumes)
    code = "import llama_cpp; print(llama_cpp.llama_print_system_info().decode().strip())"
    features = {
        "pod": bench.kubectl("exec", "-n", NAMESPACE, pod_name, "-c", "runtime", "--", "python3", "-c", code).strip(),
        "host": llama_features(portable),
        "host_native": llama_features(None),
    }
    if features["pod"] != features["host"]:
        log.warning("the pod's llama.cpp build differs from the host's portable one: %s", features)
    servers = {"host": host_server(args, "slm-runtime-host", portable)}
    servers["host_native"] = host_server(args, "slm-runtime-host-native", None)
    try:
        for server in servers.values():
            server.start()
        urls = {"pod": pod_url, **{side: server.url for side, server in servers.items()}}

        def triple(run: int) -> dict[str, Timing]:
            text = benchlib.prompt(run)
            order = ["pod", "host", "host_native"] if run % 2 else ["host_native", "host", "pod"]
            timings = {side: one_run(urls[side], text, args.tokens, args.run_timeout) for side in order}
            log.info(
                "run %d: %s",
                run,
                " | ".join(f"{s} {t.decode_tok_s:.1f} tok/s ttft {t.ttft * 1000:.0f} ms" for s, t in timings.items()),
            )
            return timings

        with contextlib.suppress(benchlib.TooSlowError):
            triple(0)  # warm-up of all three, not counted
        pids = pod_pids(bench, pod)
        log.info("the pod's runtime runs as host pid(s) %s", pids)
        runs = clean_runs(triple, pids, args)
        memory = {side: server.rss() for side, server in servers.items()}
    finally:
        for server in servers.values():
            server.stop()
        bench.delete(name)
    summary = benchlib.compare_pairs([(t["host"], t["pod"]) for t in runs.results], "host", "pod")
    summary["same_text"] = sum(t["host"].text == t["pod"].text for t in runs.results)
    build = benchlib.compare_pairs([(t["host_native"], t["host"]) for t in runs.results], "host_native", "host")
    return {
        **summary,
        "portable_vs_native_build": build,
        "llama_cpp_features": features,
        "memory_mib": memory,
        "noise": runs.noise(),
        "pod_url": "pod IP (veth + bridge)",
    }


# --- part 2: apply -> first answer ------------------------------------------------------------------------------


class PodWatch:
    """Local wall-clock times at which the watch first saw the (first) pod of an SLMDeployment created, bound to
    the node and Ready."""

    def __init__(self, bench: Bench, name: str) -> None:
        self.bench, self.name = bench, name
        self.seen: dict[str, float] = {}
        self.pod: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        time.sleep(0.3)  # the watch is established before the apply
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _mark(self, step: str) -> None:
        self.seen.setdefault(step, time.time())

    def _run(self) -> None:
        selector = f"app.kubernetes.io/instance={self.name}"
        while not self._stop.is_set():
            stream = watch.Watch()
            with contextlib.suppress(Exception):
                for event in stream.stream(
                    self.bench.core.list_namespaced_pod, NAMESPACE, label_selector=selector, timeout_seconds=5
                ):
                    self._observe(event["object"])
                    if self._stop.is_set():
                        stream.stop()
                        break

    def _observe(self, obj: client.V1Pod) -> None:
        pod: dict[str, Any] = self.bench.api.sanitize_for_serialization(obj)
        name, spec, status = pod["metadata"]["name"], pod.get("spec") or {}, pod.get("status") or {}
        if self.pod is None:
            self.pod = name
        if name != self.pod:
            return
        self._mark("created")
        if spec.get("nodeName"):
            self._mark("scheduled")
        if any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []):
            self._mark("ready")


def _log_time(line: str) -> float:
    """The CRI timestamp that `kubectl logs --timestamps` puts first (RFC 3339, nanoseconds, UTC)."""
    stamp = line.split(" ", 1)[0]
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole + "+00:00").timestamp()
    return seconds + float(f"0.{fraction or 0}")


def first_answer(url: str, deadline: float) -> float:
    """Poll with a one-token generation until one is answered; the local time it was."""
    body = {"model": MODEL_NAME, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
    while time.monotonic() < deadline:
        try:
            reply = httpx.post(f"{url}/api/generate", json=body, timeout=httpx.Timeout(30, connect=1), trust_env=False)
            if reply.status_code == 200:
                return time.time()
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"no answer from {url}")


def start_once(bench: Bench, args: argparse.Namespace, name: str, *, cached: bool) -> dict[str, Any]:
    """One apply of a new SLMDeployment ``name``. A fresh name each time: today the operator keeps deleting and
    making again the Deployment of an SLMDeployment applied under a deleted one's name (the real-node test
    test_an_slmdeployment_deleted_and_applied_again_serves_again shows it)."""
    if not cached:
        for entry in (bench.volumes / "cache").iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    with PodWatch(bench, name) as pods:
        applied = time.time()
        bench.apply(manifest(name, args, cached_claim=True))
        deadline = time.monotonic() + 300
        url = wait_for(f"{name}'s Service", lambda: bench.service_url(name), 60)
        answered = first_answer(url, deadline)
        wait_for("the watch to see the pod Ready", lambda: "ready" in pods.seen, 30)
        seen, pod = dict(pods.seen), pods.pod
    assert pod is not None
    # The kubelet publishes container states about once a second: the steps inside containers come from their
    # logs (CRI timestamps, nanoseconds; the same host clock as the watch and the client).
    pull_log = bench.kubectl("logs", "-n", NAMESPACE, pod, "-c", "model-pull", "--timestamps").splitlines()
    pull_log = [line for line in pull_log if line.strip()]
    logs = bench.kubectl("logs", "-n", NAMESPACE, pod, "-c", "runtime", "--timestamps").splitlines()
    loading = next(_log_time(line) for line in logs if " loading model " in line)
    ready_line = next(line for line in logs if f"model {MODEL_NAME} ready in" in line)
    model_ready = _log_time(ready_line)
    pod_json = json.loads(bench.kubectl("get", "pod", "-n", NAMESPACE, pod, "-o", "json"))
    (init,) = pod_json["status"]["initContainerStatuses"]
    pull_result = json.loads(init["state"]["terminated"]["message"])
    events = [
        f"{e.reason}: {e.message}"
        for e in bench.core.list_namespaced_event(NAMESPACE).items
        if e.involved_object.name == pod and e.reason in ("Pulled", "Pulling")
    ]
    marks = [
        applied,
        seen["created"],
        seen["scheduled"],
        _log_time(pull_log[0]),  # the pull process's first line
        _log_time(pull_log[-1]),  # "... ready at ..." or "... cached at ..."
        loading,
        model_ready,
        seen["ready"],
        answered,
    ]
    phases = {phase: round(end - start, 3) for phase, start, end in zip(PHASES, marks[:-1], marks[1:], strict=True)}
    result = {
        "cached": cached,
        "pull_found_cached": bool(pull_result.get("cached")),
        "total_s": round(answered - applied, 3),
        "phases_s": phases,
        "runtime_says": ready_line.split(" ", 1)[1].strip(),
        "pull_says": next(line for line in pull_log if " ready at " in line or " cached at " in line).split(" ", 1)[1],
        "image_events": events,
    }
    log.info("%s: %.1fs to the first answer %s", "cached" if cached else "not cached", answered - applied, phases)
    bench.delete(name)
    return result


def apply_to_answer(bench: Bench, args: argparse.Namespace) -> dict[str, Any]:
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        benchlib.settle(args.settle)
        log.info("round %d of %d", index + 1, args.rounds)
        rounds.append(start_once(bench, args, f"bench-start-{index}-cold", cached=False))
        benchlib.settle(args.settle)
        rounds.append(start_once(bench, args, f"bench-start-{index}-warm", cached=True))
    summary: dict[str, Any] = {}
    for label, cached in (("not_cached", False), ("cached", True)):
        mine = [r for r in rounds if r["cached"] is cached]
        summary[label] = {
            "total_s": benchlib.spread([r["total_s"] for r in mine]),
            "phases_s": {p: benchlib.spread([r["phases_s"][p] for r in mine]) for p in PHASES},
            "pull_found_cached": [r["pull_found_cached"] for r in mine],
        }
    return {**summary, "rounds": rounds}


# --- main -------------------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="pod/host pairs")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per completion")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--context-length", type=int, default=2048)
    parser.add_argument("--rounds", type=int, default=3, help="apply -> answer rounds (each: not cached, cached)")
    parser.add_argument("--settle", type=float, default=5, help=benchlib.SETTLE_HELP)
    parser.add_argument("--foreign", type=float, default=0.2, help=benchlib.FOREIGN_HELP)
    parser.add_argument("--run-timeout", type=float, default=20, help="seconds per side before a run is abandoned")
    parser.add_argument("--out", type=Path, default=benchlib.STATE / "real_node.json")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    benchlib.setup_logging()
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    benchlib.stop_on_sigterm()
    params = {k: v for k, v in vars(args).items() if k != "out"} | {"model": benchlib.default_model().name}
    result = benchlib.header("real_node", params)
    work = Path(tempfile.mkdtemp(prefix="slm-bench-realnode-"))
    work.chmod(0o755)
    try:
        with cluster(work) as (bench, _operator):
            result["pod_vs_host"] = pod_vs_host(bench, args)
            result["apply_to_answer"] = apply_to_answer(bench, args)
    except (RuntimeError, TimeoutError, httpx.HTTPError, benchlib.TooSlowError, ApiException) as error:
        log.error("real-node benchmark failed: %s", error)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    benchlib.finish(result, args.out)
    ratio, ttft = result["pod_vs_host"]["ratio"], result["pod_vs_host"]["ttft_overhead_ms"]
    startup = result["apply_to_answer"]
    print(
        f"real node: pod/host decode tok/s ratio {ratio['median']:.3f} "
        f"(min {ratio['min']:.3f}, max {ratio['max']:.3f}); TTFT pod - host {ttft['median']:.1f} ms; "
        "apply -> first answer: not cached "
        f"{startup['not_cached']['total_s']['median']:.1f} s, cached {startup['cached']['total_s']['median']:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
