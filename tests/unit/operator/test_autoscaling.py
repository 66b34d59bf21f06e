"""Autoscaling (issue 16): the spec's rules (pydantic and their CEL mirrors), who owns the replica count, and the
HPA or KEDA ScaledObject rendered for each mode."""

from __future__ import annotations

from typing import Any

import pytest

from slm_operator.api import Accelerator, ManifestError, SLMDeployment, validate_manifest
from slm_operator.api.gateway import FORCE_ACTIVATION_ANNOTATION, GATEWAY_INFLIGHT, GATEWAY_MODEL_LABEL
from slm_operator.crd import crd_manifest
from slm_operator.render import OWNED_KINDS, RenderOptions, plan_for, render_all
from slm_operator.render.meta import common_labels
from slm_operator.render.scaling import KEDA_EXCLUDED_LABELS_ANNOTATION, Autoscaler
from slm_operator.settings import OperatorSettings, load_settings
from slm_runtime.metrics import REQUESTS_INFLIGHT

PROMETHEUS = "http://prometheus.monitoring.svc:9090"
GATEWAY = OperatorSettings(prometheus_url=PROMETHEUS, gateway_service="slm-system/slm-gateway")
NO_GATEWAY = OperatorSettings(prometheus_url=PROMETHEUS)
INFLIGHT = {"enabled": True, "minReplicas": 1, "maxReplicas": 5, "targetInflightRequests": 4}
TO_ZERO = {**INFLIGHT, "minReplicas": 0}


def manifest(**autoscaling: Any) -> dict[str, Any]:
    return {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": "assistant", "namespace": "team-a", "uid": "u1"},
        "spec": {"model": {"source": "ollama://qwen2.5:3b"}, "autoscaling": autoscaling},
    }


def slm(**autoscaling: Any) -> SLMDeployment:
    return validate_manifest(manifest(**autoscaling))


def errors_of(**autoscaling: Any) -> list[str]:
    with pytest.raises(ManifestError) as info:
        validate_manifest(manifest(**autoscaling))
    return [str(e) for e in info.value.errors]


def render(resource: SLMDeployment, settings: OperatorSettings = GATEWAY, **options: Any) -> dict[str, dict[str, Any]]:
    options = {"service_monitor_crd": True, **options}
    return {m["kind"]: m for m in render_all(resource, settings, RenderOptions(Accelerator.CPU, **options))}


def autoscaling_rules() -> list[dict[str, str]]:
    spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    rules: list[dict[str, str]] = spec["properties"]["autoscaling"]["x-kubernetes-validations"]
    return rules


class TestValidation:
    def test_defaults(self) -> None:
        scaling = slm(enabled=True).spec.autoscaling
        assert scaling is not None
        assert (scaling.min_replicas, scaling.scale_to_zero_after, scaling.polling_interval) == (1, "5m", "15s")
        assert scaling.scale_up_stabilization is None and scaling.scale_down_stabilization is None
        assert not scaling.scales_to_zero and not scaling.inflight

    def test_min_replicas_zero_with_an_inflight_target_scales_to_zero(self) -> None:
        scaling = slm(**TO_ZERO, scaleToZeroAfter="90s").spec.autoscaling
        assert scaling is not None and scaling.scales_to_zero and scaling.inflight
        assert scaling.scale_to_zero_after == "90s"

    def test_min_replicas_zero_without_an_inflight_target_is_refused_with_the_fix(self) -> None:
        (error,) = errors_of(enabled=True, minReplicas=0, targetCPUUtilization=70)
        assert error.startswith("spec.autoscaling: minReplicas: 0 needs a KEDA ScaledObject to wake the model")
        assert "set spec.autoscaling.targetInflightRequests" in error and "slm-gateway" in error
        assert "or set minReplicas to 1 or more" in error

    def test_durations_are_checked(self) -> None:
        (error,) = errors_of(**INFLIGHT, scaleToZeroAfter="five minutes")
        assert error.startswith("spec.autoscaling.scaleToZeroAfter: 'five minutes' is not a duration")
        (error,) = errors_of(**INFLIGHT, pollingInterval="500ms")
        assert "pollingInterval (500ms) must be at least 1s" in error
        (error,) = errors_of(**INFLIGHT, scaleDownStabilization="2h")
        assert "scaleDownStabilization (2h) must be at most 1h" in error
        (error,) = errors_of(**INFLIGHT, scaleUpStabilization="61m")
        assert "scaleUpStabilization (61m) must be at most 1h" in error
        ok = slm(**INFLIGHT, pollingInterval="1s", scaleUpStabilization="0s", scaleDownStabilization="1h")
        assert ok.spec.autoscaling is not None and ok.spec.autoscaling.scale_down_stabilization == "1h"

    def test_every_pydantic_rule_has_its_cel_mirror_with_the_same_fix(self) -> None:
        by_field = {rule["fieldPath"]: rule for rule in autoscaling_rules() if "minReplicas > 0" not in rule["rule"]}
        zero = next(rule for rule in autoscaling_rules() if "minReplicas > 0" in rule["rule"])
        assert zero["rule"] == "self.minReplicas > 0 || has(self.targetInflightRequests)"
        assert zero["fieldPath"] == ".minReplicas"
        (pydantic,) = errors_of(enabled=True, minReplicas=0)
        assert zero["message"] == "spec.autoscaling." + pydantic.removeprefix("spec.autoscaling: ")
        assert by_field[".pollingInterval"]["rule"] == "duration(self.pollingInterval) >= duration('1s')"
        for field in ("scaleUpStabilization", "scaleDownStabilization"):
            rule = by_field[f".{field}"]
            assert rule["rule"] == f"!has(self.{field}) || duration(self.{field}) <= duration('1h')"
            assert "must be at most 1h" in rule["message"] and "3600" in rule["message"]

    def test_the_new_duration_fields_are_bounded_for_cel(self) -> None:
        spec = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        fields = spec["properties"]["autoscaling"]["properties"]
        for name in ("scaleToZeroAfter", "pollingInterval", "scaleUpStabilization", "scaleDownStabilization"):
            assert fields[name]["type"] == "string" and fields[name]["maxLength"] == 32 and fields[name]["pattern"]
        assert fields["scaleToZeroAfter"]["default"] == "5m" and fields["pollingInterval"]["default"] == "15s"
        assert fields["minReplicas"]["minimum"] == 0


def test_cpu_scaling_needs_a_cpu_request_when_the_spec_sets_requests() -> None:
    """CPU utilization is relative to the cpu request: without one the HPA cannot compute it and KEDA's webhook
    refuses the ScaledObject's cpu trigger."""

    def spec(autoscaling: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
        doc = manifest(**autoscaling)
        doc["spec"]["resources"] = resources
        return doc

    memory_only = {"requests": {"memory": "1Gi"}}
    for autoscaling in ({"enabled": True}, {**INFLIGHT, "targetCPUUtilization": 70}):
        with pytest.raises(ManifestError) as info:
            validate_manifest(spec(autoscaling, memory_only))
        (error,) = [str(e) for e in info.value.errors]
        assert error.startswith("spec: spec.autoscaling scales on CPU utilization")
        assert "add spec.resources.requests.cpu" in error
    validate_manifest(spec(INFLIGHT, memory_only))  # in flight only: no cpu metric
    validate_manifest(spec({"enabled": True}, {"requests": {"memory": "1Gi"}, "limits": {"cpu": "2"}}))
    validate_manifest(spec({"enabled": False}, memory_only))
    validate_manifest(spec({"enabled": True}, {"limits": {"memory": "1Gi"}}))  # the operator's default requests
    rules = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    (rule,) = [r for r in rules["x-kubernetes-validations"] if "resources.requests" in r["rule"]]
    assert rule["message"] == error.removeprefix("spec: ")


class TestCpu:
    def test_cpu_only_renders_the_hpa_with_behavior_and_no_scaled_object(self) -> None:
        objects = render(
            slm(enabled=True, minReplicas=2, targetCPUUtilization=60, scaleUpStabilization="0s",
                scaleDownStabilization="30s"),
            keda=True,
        )  # fmt: skip
        assert "ScaledObject" not in objects and "replicas" not in objects["Deployment"]["spec"]
        hpa = objects["HorizontalPodAutoscaler"]["spec"]
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 3)
        assert hpa["metrics"] == [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}},
            }
        ]
        assert hpa["behavior"] == {
            "scaleUp": {"stabilizationWindowSeconds": 0},
            "scaleDown": {"stabilizationWindowSeconds": 30},
        }
        assert "PodDisruptionBudget" in objects
        plan = plan_for(slm(enabled=True), GATEWAY, RenderOptions(Accelerator.CPU, keda=True))
        assert plan.condition == (
            True,
            "HorizontalPodAutoscaler",
            "HorizontalPodAutoscaler assistant: 1-3 replicas on CPU utilization (target 80%, read from metrics-server)",
        )

    def test_no_behavior_without_stabilization_fields(self) -> None:
        assert "behavior" not in render(slm(enabled=True))["HorizontalPodAutoscaler"]["spec"]

    def test_autoscaling_off_has_no_condition_and_the_deployment_keeps_spec_replicas(self) -> None:
        resource = validate_manifest({**manifest(enabled=False), "spec": {**manifest()["spec"], "replicas": 2}})
        objects = render(resource, keda=True)
        assert objects["Deployment"]["spec"]["replicas"] == 2
        assert not {"HorizontalPodAutoscaler", "ScaledObject"} & objects.keys()
        assert plan_for(resource, GATEWAY, RenderOptions(Accelerator.CPU)).condition is None

    def test_an_hpa_target_left_at_zero_is_brought_back_to_the_minimum(self) -> None:
        """An HPA does nothing for a Deployment at zero replicas (KEDA took it there before scale to zero was
        turned off, or KEDA went away): the Deployment is applied at the HPA's minimum once."""
        at_zero = render(slm(enabled=True, minReplicas=2), live_replicas=0)["Deployment"]["spec"]
        assert at_zero["replicas"] == 2
        assert "replicas" not in render(slm(enabled=True), live_replicas=3)["Deployment"]["spec"]
        assert "replicas" not in render(slm(**TO_ZERO), keda=True, live_replicas=0)["Deployment"]["spec"]


class TestInflight:
    def test_renders_a_scaled_object_on_the_runtime_gauge_and_no_hpa(self) -> None:
        objects = render(slm(**INFLIGHT), keda=True)
        assert "HorizontalPodAutoscaler" not in objects and "replicas" not in objects["Deployment"]["spec"]
        scaled = objects["ScaledObject"]
        assert scaled["apiVersion"] == "keda.sh/v1alpha1"
        assert scaled["metadata"]["name"] == "assistant" and scaled["metadata"]["namespace"] == "team-a"
        assert scaled["metadata"]["ownerReferences"][0]["kind"] == "SLMDeployment"
        assert scaled["spec"] == {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "assistant"},
            "minReplicaCount": 1,
            "maxReplicaCount": 5,
            "pollingInterval": 15,
            "cooldownPeriod": 300,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "inflight",
                    "metricType": "AverageValue",
                    "metadata": {
                        "serverAddress": PROMETHEUS,
                        "query": f'sum({REQUESTS_INFLIGHT}{{namespace="team-a",service="assistant"}})',
                        "threshold": "4",
                    },
                }
            ],
        }
        assert "PodDisruptionBudget" not in objects  # minReplicas 1

    def test_cpu_target_adds_a_cpu_trigger_and_windows_go_to_keda_s_hpa(self) -> None:
        scaled = render(
            slm(**{**INFLIGHT, "minReplicas": 2}, targetCPUUtilization=70, pollingInterval="2500ms",
                scaleUpStabilization="10s", scaleDownStabilization="1m"),
            keda=True,
        )["ScaledObject"]["spec"]  # fmt: skip
        assert scaled["minReplicaCount"] == 2 and scaled["pollingInterval"] == 3
        assert [t["type"] for t in scaled["triggers"]] == ["prometheus", "cpu"]
        assert scaled["triggers"][1] == {
            "type": "cpu",
            "name": "cpu",
            "metricType": "Utilization",
            "metadata": {"value": "70"},
        }
        assert scaled["advanced"] == {
            "horizontalPodAutoscalerConfig": {
                "behavior": {
                    "scaleUp": {"stabilizationWindowSeconds": 10},
                    "scaleDown": {"stabilizationWindowSeconds": 60},
                }
            }
        }

    def test_keda_s_hpa_gets_none_of_the_operator_labels(self) -> None:
        """KEDA copies a ScaledObject's labels onto keda-hpa-<name>; ours there would make the operator take it for
        its own HPA (and prune it). KEDA's exclusion annotation lists every label we set."""
        resource = slm(**INFLIGHT)
        meta = render(resource, keda=True)["ScaledObject"]["metadata"]
        excluded = meta["annotations"][KEDA_EXCLUDED_LABELS_ANNOTATION].split(",")
        assert sorted(excluded) == sorted(meta["labels"]) == sorted(common_labels(resource))

    def test_the_operator_never_sets_the_gateway_s_force_activation_annotation(self) -> None:
        """slm-gateway sets it with its own field manager; server-side apply removes only fields our manager set."""
        for spec in (INFLIGHT, TO_ZERO):
            meta = render(slm(**spec), keda=True)["ScaledObject"]["metadata"]
            assert FORCE_ACTIVATION_ANNOTATION not in meta.get("annotations", {})

    def test_condition_names_keda_prometheus_and_the_missing_service_monitor(self) -> None:
        options = RenderOptions(Accelerator.CPU, keda=True, service_monitor_crd=True)
        ok, reason, message = plan_for(slm(**INFLIGHT), GATEWAY, options).condition or (None, "", "")
        assert (ok, reason) == (True, "KEDAScaledObject")
        assert "KEDA ScaledObject assistant (HPA keda-hpa-assistant)" in message and PROMETHEUS in message
        assert "ServiceMonitor" not in message
        bare = plan_for(slm(**INFLIGHT), GATEWAY, RenderOptions(Accelerator.CPU, keda=True))
        assert bare.ok and "no ServiceMonitor is rendered" in bare.message

    def test_without_keda_an_hpa_on_the_pods_metric_and_a_condition_with_the_fix(self) -> None:
        objects = render(slm(**INFLIGHT, targetCPUUtilization=75), keda=False)
        assert "ScaledObject" not in objects
        metrics = objects["HorizontalPodAutoscaler"]["spec"]["metrics"]
        assert [m["type"] for m in metrics] == ["Pods", "Resource"]
        assert metrics[0]["pods"]["metric"] == {"name": REQUESTS_INFLIGHT}
        plan = plan_for(slm(**INFLIGHT), GATEWAY, RenderOptions(Accelerator.CPU, keda=False))
        assert (plan.ok, plan.reason, plan.autoscaler) == (False, "KEDANotInstalled", Autoscaler.HPA)
        assert "install KEDA" in plan.message and "targetCPUUtilization" in plan.message


class TestScaleToZero:
    def test_scaled_object_scales_to_zero_and_wakes_on_the_gateway_metric(self) -> None:
        objects = render(slm(**TO_ZERO, scaleToZeroAfter="10m"), keda=True)
        assert "PodDisruptionBudget" not in objects and "HorizontalPodAutoscaler" not in objects
        assert "replicas" not in objects["Deployment"]["spec"]  # created at 1: the model loads once, then idles out
        spec = objects["ScaledObject"]["spec"]
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 5)
        assert spec["cooldownPeriod"] == 600 and spec["initialCooldownPeriod"] == 600
        inflight, gateway = spec["triggers"]
        assert inflight["name"] == "inflight" and "activationThreshold" not in inflight["metadata"]
        assert gateway == {
            "type": "prometheus",
            "name": "gateway",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": PROMETHEUS,
                "query": f'sum({GATEWAY_INFLIGHT}{{{GATEWAY_MODEL_LABEL}="team-a/assistant"}})',
                "threshold": "4",
                "activationThreshold": "0",
            },
        }
        plan = plan_for(slm(**TO_ZERO), GATEWAY, RenderOptions(Accelerator.CPU, keda=True, service_monitor_crd=True))
        assert (plan.ok, plan.reason, plan.min_replicas) == (True, "ScaleToZero", 0)
        assert "to zero after 5m" in plan.message and "slm-system/slm-gateway" in plan.message

    def test_without_a_gateway_one_replica_stays_and_the_condition_says_why(self) -> None:
        spec = render(slm(**TO_ZERO), NO_GATEWAY, keda=True)["ScaledObject"]["spec"]
        assert spec["minReplicaCount"] == 1 and "initialCooldownPeriod" not in spec
        assert [t["name"] for t in spec["triggers"]] == ["inflight"]
        plan = plan_for(slm(**TO_ZERO), NO_GATEWAY, RenderOptions(Accelerator.CPU, keda=True))
        assert (plan.ok, plan.reason) == (False, "GatewayRequired")
        assert plan.message.startswith("spec.autoscaling.minReplicas: 0 needs slm-gateway")
        assert "enable the gateway in the Helm chart, or set minReplicas to 1 or more" in plan.message

    def test_without_keda_the_hpa_keeps_one_replica(self) -> None:
        hpa = render(slm(**TO_ZERO), keda=False)["HorizontalPodAutoscaler"]["spec"]
        assert hpa["minReplicas"] == 1
        plan = plan_for(slm(**TO_ZERO), GATEWAY, RenderOptions(Accelerator.CPU, keda=False))
        assert plan.reason == "KEDANotInstalled" and "1 replica stays up" in plan.message


def test_the_scaled_object_is_an_owned_kind_applied_after_the_deployment() -> None:
    kinds = [kind for _, kind in OWNED_KINDS]
    assert ("keda.sh/v1alpha1", "ScaledObject") in OWNED_KINDS
    assert kinds.index("Deployment") < kinds.index("ScaledObject")


def test_the_network_policy_admits_the_gateway_s_namespace() -> None:
    resource = validate_manifest({**manifest(), "spec": {**manifest()["spec"], "networkPolicy": {"enabled": True}}})
    peers = render(resource)["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    namespaces = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers[1:]]
    assert namespaces == ["monitoring", "slm-system"]
    alone = render(resource, NO_GATEWAY)["NetworkPolicy"]["spec"]["ingress"][0]["from"]
    assert len(alone) == 2


def test_operator_settings_for_keda_and_the_gateway(tmp_path: Any) -> None:
    defaults = OperatorSettings()
    assert defaults.prometheus_url == "http://prometheus-operated.monitoring.svc:9090"
    assert defaults.gateway_service == ""
    config = tmp_path / "config.yaml"
    config.write_text("prometheusUrl: http://prom.obs.svc:9090\ngatewayService: slm-system/slm-gateway\n")
    loaded = load_settings(config)
    assert (loaded.prometheus_url, loaded.gateway_service) == ("http://prom.obs.svc:9090", "slm-system/slm-gateway")
    with pytest.raises(ValueError, match="gateway_service"):
        OperatorSettings(gateway_service="slm-gateway")
