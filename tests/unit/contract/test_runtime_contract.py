"""The operator -> runtime contract: what the renderer writes into a pod, the runtime loads, and vice versa.

The boundary is strings in a pod spec (SLM_* variables, `slm-runtime` arguments, exit codes, metric names), so
no type checker sees a mismatch; these tests render with the operator and read with the runtime's own code.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from slm_gateway.metrics import GatewayMetrics
from slm_operator.api import Accelerator, ManifestError, Parameters, ServerSpec, SLMDeployment, validate_manifest
from slm_operator.api.gateway import model_id
from slm_operator.controller.status import pod_problems
from slm_operator.render import RenderOptions, render_all
from slm_operator.render.deployment import PULL_CONTAINER, RUNTIME_CONTAINER
from slm_operator.render.runtime_env import runtime_environment
from slm_operator.settings import OperatorSettings
from slm_runtime.cli import build_parser
from slm_runtime.fetch.errors import pull_failures
from slm_runtime.fetch.settings import ENV as FETCH_ENV
from slm_runtime.fetch.settings import FetchSettings
from slm_runtime.metrics import Metrics
from slm_runtime.settings import SECTIONS, SettingsError, env_name, parameter_field, settings_from_sources
from slm_runtime.shutdown import SERVE_FAILURES

SETTINGS = OperatorSettings()


def resource(spec: dict[str, Any]) -> SLMDeployment:
    return validate_manifest(
        {
            "apiVersion": "slm-operator.io/v1alpha1",
            "kind": "SLMDeployment",
            "metadata": {"name": "contract", "namespace": "team-a", "uid": "1"},
            "spec": {"model": {"source": "ollama://qwen2.5:0.5b"}, **spec},
        }
    )


def rendered(slm: SLMDeployment) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in render_all(slm, SETTINGS, RenderOptions(Accelerator.CPU))}


def runtime_loads(slm: SLMDeployment, model_file: Path) -> bool:
    """Whether `slm-runtime serve` starts with the environment the operator renders for ``slm``."""
    profile = SETTINGS.profile(Accelerator.CPU)
    env = runtime_environment(slm.spec, profile, cache_dir=str(model_file.parent))
    try:
        settings_from_sources({"model": model_file}, env)
    except SettingsError:
        return False
    return True


def spec_accepts(spec: dict[str, Any]) -> SLMDeployment | None:
    try:
        return resource(spec)
    except ManifestError:
        return None


def _numeric_cases(model: type[Parameters] | type[ServerSpec], typical: dict[str, Any]) -> list[Any]:
    """(field alias, value) at each declared bound, just past it, and a typical value, for every numeric field."""
    cases = []
    schema = model.model_json_schema(by_alias=True)["properties"]
    for alias, node in schema.items():
        options = node.get("anyOf", [node])
        kinds = {o.get("type") for o in options}
        if not kinds & {"integer", "number"}:
            continue
        bounds = next(o for o in options if o.get("type") in ("integer", "number"))
        step = 1 if "integer" in kinds else 0.01
        values = [typical.get(alias, 1)]
        for key, inside, outside in (
            ("minimum", 0, -step),
            ("exclusiveMinimum", step, 0),
            ("maximum", 0, step),
            ("exclusiveMaximum", -step, 0),
        ):
            if key in bounds:
                values += [bounds[key] + inside, bounds[key] + outside]
        cases += [pytest.param(alias, value, id=f"{alias}={value:g}") for value in values if math.isfinite(value)]
    return cases


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF")
    return path


@pytest.mark.parametrize(
    ("field", "value"),
    _numeric_cases(Parameters, {"temperature": 0.7, "topP": 0.9, "numPredict": 128, "contextLength": 4096}),
)
def test_spec_and_runtime_agree_on_every_parameter(field: str, value: Any, model_file: Path) -> None:
    """Every spec.parameters value is accepted by both sides or refused by both (no crash-looping pod)."""
    slm = spec_accepts({"parameters": {field: value}})
    if slm is None:  # the spec refuses it: so must the runtime, or the bound is stricter than it need be
        with pytest.raises(SettingsError):
            settings_from_sources({"model": model_file}, {env_name(parameter_field(field)): str(value)})
    else:
        assert runtime_loads(slm, model_file), f"spec accepts parameters.{field}={value} but the runtime refuses it"


@pytest.mark.parametrize(("field", "value"), _numeric_cases(ServerSpec, {"port": 8080, "parallel": 4, "maxQueue": 16}))
def test_every_server_value_the_spec_accepts_starts_the_runtime(field: str, value: Any, model_file: Path) -> None:
    slm = spec_accepts({"server": {field: value}})
    if slm is not None:
        assert runtime_loads(slm, model_file), f"spec accepts server.{field}={value} but the runtime refuses it"


@pytest.mark.parametrize(("field", "value"), [("topP", 0), ("numPredict", -2)])
def test_values_the_runtime_refuses_are_refused_by_the_spec_with_the_field_named(field: str, value: Any) -> None:
    with pytest.raises(ManifestError) as caught:
        resource({"parameters": {field: value}})
    assert f"spec.parameters.{field}" in str(caught.value)


def test_every_rendered_variable_is_one_the_runtime_reads(model_file: Path) -> None:
    slm = resource(
        {
            "parameters": {"temperature": 0.2, "numThread": 2, "numBatch": 64, "stop": ["</s>"], "seed": 7},
            "system": "be brief",
            "template": "{{ .Prompt }}",
            "messages": [{"role": "user", "content": "hi"}],
            "model": {"source": "ollama://qwen2.5:0.5b", "sha256": "a" * 64},
            "server": {"apiKeySecretRef": {"name": "key", "key": "token"}},
        }
    )
    known = {env_name(field) for section in SECTIONS.values() for field in section.model_fields}
    container = rendered(slm)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    names = {e["name"] for e in container["env"]}
    assert names <= known, f"variables the runtime does not read: {sorted(names - known)}"
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    loaded = settings_from_sources({"model": model_file}, {**env, env_name("api_key"): "secret"})
    assert loaded.engine.threads == 2 and loaded.engine.batch_size == 64
    assert loaded.sampling.stop == ("</s>",) and loaded.sampling.seed == 7
    assert loaded.model.messages[0].content == "hi"
    assert loaded.server.api_key is not None
    assert not loaded.server.honour_keep_alive  # an Ollama client's keep_alive never unloads a pod's model


def test_container_arguments_parse_with_the_runtimes_own_parser() -> None:
    slm = resource({"model": {"source": "ollama://qwen2.5:0.5b", "sha256": "b" * 64}})
    pod = rendered(slm)["Deployment"]["spec"]["template"]["spec"]
    parser = build_parser()
    pull = parser.parse_args(pod["initContainers"][0]["args"])
    assert pull.command == "pull" and pull.sha256 == "b" * 64 and str(pull.dest) == SETTINGS.cache_mount_path
    assert parser.parse_args(pod["containers"][0]["args"]).command == "serve"


@pytest.mark.parametrize("failure", pull_failures(), ids=lambda cls: cls.__name__)
def test_every_pull_exit_code_is_reported_with_its_own_reason(failure: Any) -> None:
    pod = {
        "status": {
            "initContainerStatuses": [
                {
                    "name": PULL_CONTAINER,
                    "state": {"terminated": {"exitCode": failure.exit_code, "message": "why"}},
                }
            ]
        }
    }
    assert [(p.reason, p.message) for p in pod_problems(pod)] == [(failure.reason, "why")]


def test_the_autoscaling_metric_is_one_the_runtime_exports() -> None:
    slm = resource({"autoscaling": {"enabled": True, "targetInflightRequests": 2}})
    (metric,) = [m for m in rendered(slm)["HorizontalPodAutoscaler"]["spec"]["metrics"] if m["type"] == "Pods"]
    exported = Metrics("m").render().decode()
    assert f"\n{metric['pods']['metric']['name']}{{" in exported


def test_keda_queries_the_gauge_the_runtime_exports_per_pod() -> None:
    """KEDA's trigger sums the runtime's in-flight gauge over the pods of the model's Service: the metric name in
    the query is one the runtime exports (its value running + waiting, per pod)."""
    slm = resource({"autoscaling": {"enabled": True, "minReplicas": 1, "targetInflightRequests": 2}})
    settings = OperatorSettings(gateway_service="slm-system/slm-gateway")
    objects = {m["kind"]: m for m in render_all(slm, settings, RenderOptions(Accelerator.CPU, keda=True))}
    (trigger,) = objects["ScaledObject"]["spec"]["triggers"]
    metric = trigger["metadata"]["query"].removeprefix("sum(").partition("{")[0]
    exported = Metrics("m").render().decode()
    assert f"\n{metric}{{" in exported


def test_a_model_at_zero_wakes_on_the_series_the_gateway_exports_for_it() -> None:
    """KEDA's activation trigger of a model that scales to zero selects, by name and model label, the series the
    gateway exports for that model from the moment it knows it (at 0, before any request), and a held request
    makes it exceed the activation threshold."""
    from prometheus_client.parser import text_string_to_metric_families

    slm = resource({"autoscaling": {"enabled": True, "minReplicas": 0, "targetInflightRequests": 2}})
    settings = OperatorSettings(gateway_service="slm-system/slm-gateway")
    objects = {m["kind"]: m for m in render_all(slm, settings, RenderOptions(Accelerator.CPU, keda=True))}
    (trigger,) = [t for t in objects["ScaledObject"]["spec"]["triggers"] if "activationThreshold" in t["metadata"]]
    selector = trigger["metadata"]["query"].removeprefix("sum(").removesuffix(")")
    metric, _, labels = selector.partition("{")
    wanted = dict(pair.split("=", 1) for pair in labels.removesuffix("}").split(","))
    wanted = {key: value.strip('"') for key, value in wanted.items()}

    def value(gateway: GatewayMetrics) -> float | None:
        for family in text_string_to_metric_families(gateway.render().decode()):
            for sample in family.samples:
                if sample.name == metric and sample.labels == wanted:
                    return float(sample.value)
        return None

    gateway = GatewayMetrics()
    gateway.add_model(model_id(slm.metadata.namespace or "", slm.metadata.name))
    assert value(gateway) == 0.0
    gateway.inflight.labels(**wanted).inc()
    assert (value(gateway) or 0) > float(trigger["metadata"]["activationThreshold"])


@pytest.mark.parametrize("failure", SERVE_FAILURES, ids=lambda failure: failure.reason)
def test_every_serve_exit_code_is_reported_with_its_reason_and_message(failure: Any) -> None:
    """A runtime that exits with a failure's code (restarted, so it shows in lastState) is named by its reason and
    the message the runtime wrote to its termination log, not a generic crash loop."""
    message = f"{failure.reason}: loading model m failed: not a GGUF file"
    pod = {
        "status": {
            "containerStatuses": [
                {
                    "name": RUNTIME_CONTAINER,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                    "lastState": {"terminated": {"exitCode": failure.exit_code, "message": message}},
                }
            ]
        }
    }
    problems = pod_problems(pod)
    assert (problems[0].reason, problems[0].message) == (failure.reason, message)


def test_the_runtime_writes_its_failure_where_the_pod_spec_says() -> None:
    container = rendered(resource({}))["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env[env_name("termination_log")] == container.get("terminationMessagePath", "/dev/termination-log")


def test_serve_looks_for_a_pvc_source_where_the_pod_mounts_it() -> None:
    """The pull finds pvc:// claims under --pvc-root; serve resolves the same source, so it needs the same root."""
    pod = rendered(resource({"model": {"source": "pvc://models/gemma.gguf"}}))["Deployment"]["spec"]["template"]
    pull, serve = pod["spec"]["initContainers"][0], pod["spec"]["containers"][0]
    root = pull["args"][pull["args"].index("--pvc-root") + 1]
    (variable, *_) = FETCH_ENV["pvc_root"]
    assert {e["name"]: e.get("value") for e in serve["env"]}[variable] == root
    assert FetchSettings.from_env({variable: root}).pvc_root == Path(root)
