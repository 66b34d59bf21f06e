"""The Grafana dashboard (charts/slm-operator/files/dashboards/slm-operator.json): valid Grafana JSON by Grafana's
own schema types, a sound layout, and queries over metric names the runtime, the operator and the gateway really
export."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from grafana_foundation_sdk.cog import encoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models.dashboard import Dashboard

from slm_gateway.metrics import GatewayMetrics
from slm_operator.controller import metrics as operator_metrics
from slm_runtime.metrics import Metrics

DASHBOARD_PATH = Path(__file__).resolve().parents[3] / "charts/slm-operator/files/dashboards/slm-operator.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_PATH.read_text())
PANELS = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
PROMQL_WORDS = {
    "sum", "count", "max", "min", "avg", "by", "without", "rate", "histogram_quantile", "le", "on", "ignoring",
    "avg_over_time", "increase", "namespace", "model", "outcome", "phase", "result", "verb", "kind", "code", "reason",
}  # fmt: skip


def contained(expected: Any, actual: Any, path: str = "") -> list[str]:
    """Paths of ``expected`` that ``actual`` lacks or changes (``actual`` may hold more)."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path or "/"]
        return [m for k, v in expected.items() for m in contained(v, actual.get(k, _MISSING), f"{path}/{k}")]
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [path]
        return [
            m for i, (e, a) in enumerate(zip(expected, actual, strict=True)) for m in contained(e, a, f"{path}/{i}")
        ]
    return [] if expected == actual else [path]


_MISSING = object()


def exported_names() -> set[str]:
    """Every sample name the runtime, the operator and the gateway expose (histograms' _bucket/_sum/_count
    included)."""
    names: set[str] = set()
    runtime = Metrics("probe")
    runtime.time_to_first_token.labels("probe", "ollama").observe(0.1)
    runtime.inter_token_latency.labels("probe", "ollama").observe(0.1)
    runtime.request_duration.labels("probe", "ollama").observe(0.1)
    runtime.queue_time.labels("probe", "ollama").observe(0.1)
    runtime.requests.labels("probe", "ollama", "ok").inc()
    runtime.prompt_tokens.labels("probe", "ollama").inc()
    runtime.generation_tokens.labels("probe", "ollama").inc()
    runtime.model_load_seconds.labels("probe").set(1)
    runtime.set_model_info(format="gguf", engine="llama-cpp", quantization="Q4_K_M", digest="sha256:0")
    for family in runtime.registry.collect():
        names.update(sample.name for sample in family.samples)
    for family in GatewayMetrics().registry.collect():
        base = family.name
        names.update({base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"})
    for collector in (
        operator_metrics.RECONCILES,
        operator_metrics.RECONCILE_SECONDS,
        operator_metrics.MANAGED,
        operator_metrics.API_WRITES,
        operator_metrics.FALLBACKS,
    ):
        for family in collector.describe():
            base = family.name
            names.update({base, f"{base}_total", f"{base}_bucket", f"{base}_sum", f"{base}_count"})
    return names


def test_loads_into_grafanas_dashboard_types_without_losing_a_field() -> None:
    register_default_plugins()
    loaded = Dashboard.from_json(DASHBOARD)
    round_trip = json.loads(json.dumps(loaded, cls=encoder.JSONEncoder))
    assert contained(DASHBOARD, round_trip) == []  # every field we wrote is one Grafana's schema knows
    assert loaded.uid == "slm-operator" and loaded.title


def test_panels_have_unique_ids_and_do_not_overlap() -> None:
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in DASHBOARD["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        mine = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not mine & cells, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_covers_the_issue_panels_per_model() -> None:
    titles = " | ".join(p["title"].lower() for p in PANELS)
    for topic in ("time to first token", "tokens per second", "waiting", "ready replicas"):
        assert topic in titles
    queries = [t["expr"] for p in PANELS for t in p["targets"]]
    runtime_queries = [q for q in queries if "slm_operator_" not in q and "slm_gateway_" not in q]
    assert runtime_queries and all('model=~"$model"' in q and 'namespace=~"$namespace"' in q for q in runtime_queries)
    # The gateway labels a model "namespace/name" (slm_operator.api.gateway.model_id); its own pod's namespace
    # label says nothing about the model's.
    gateway_queries = [q for q in queries if "slm_gateway_" in q]
    assert gateway_queries and all('model=~"$namespace/.*"' in q for q in gateway_queries)


def test_variables_and_datasource_are_consistent() -> None:
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert variables == {"datasource", "namespace", "model"}
    for panel in PANELS:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)


@pytest.mark.parametrize("panel", PANELS, ids=[p["title"] for p in PANELS])
def test_queries_use_only_exported_metric_names(panel: dict[str, Any]) -> None:
    exported = exported_names()
    for target in panel["targets"]:
        expr = re.sub(r'"[^"]*"', '""', target["expr"])  # drop label values
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # and range selectors
        identifiers = set(re.findall(r"[a-zA-Z_][a-zA-Z0-9_]*", expr)) - PROMQL_WORDS
        numbers_free = {i for i in identifiers if not re.fullmatch(r"\d+", i)}
        unknown = numbers_free - exported
        assert unknown == set(), f"{panel['title']}: {unknown} is not exported by the runtime or the operator"
