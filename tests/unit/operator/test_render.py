"""Rendering: pure builders from SLMDeployment to manifests, checked without a cluster."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from slm_operator.api import Accelerator, SLMDeployment, load_manifest, validate_manifest
from slm_operator.render import RenderOptions, render_all
from slm_operator.render.meta import MODEL_DIGEST_ANNOTATION
from slm_operator.settings import OperatorSettings, load_settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS = OperatorSettings()


def slm(**spec: Any) -> SLMDeployment:
    doc: dict[str, Any] = {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": "assistant", "namespace": "team-a", "uid": "1234"},
        "spec": {"model": {"source": "ollama://qwen2.5:3b"}, **spec},
    }
    return validate_manifest(doc)


def render(resource: SLMDeployment, accelerator: Accelerator = Accelerator.CPU, **kw: Any) -> dict[str, dict[str, Any]]:
    return {m["kind"]: m for m in render_all(resource, SETTINGS, RenderOptions(accelerator, **kw))}


def pod_spec(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = objects["Deployment"]["spec"]["template"]["spec"]
    return spec


def env(objects: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in pod_spec(objects)["containers"][0]["env"]}


def test_defaults_render_deployment_and_service_only() -> None:
    objects = render(slm())
    assert sorted(objects) == ["Deployment", "Service"]
    assert objects["Deployment"]["spec"]["replicas"] == 1
    assert objects["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 11434, "targetPort": "http", "protocol": "TCP"}
    ]


def test_every_object_is_owned_labelled_and_namespaced() -> None:
    for manifest in render_all(
        slm(replicas=2, autoscaling={"enabled": False}, networkPolicy={"enabled": True}),
        SETTINGS,
        RenderOptions(Accelerator.CPU, service_monitor_crd=True),
    ):
        meta = manifest["metadata"]
        assert meta["namespace"] == "team-a"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "slm-operator"
        assert meta["ownerReferences"] == [
            {
                "apiVersion": "slm-operator.io/v1alpha1",
                "kind": "SLMDeployment",
                "name": "assistant",
                "uid": "1234",
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]


def test_pod_is_restricted_with_writable_cache_and_tmp() -> None:
    spec = pod_spec(render(slm()))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for container in [*spec["initContainers"], *spec["containers"]]:
        security = container["securityContext"]
        assert security["runAsUser"] == 65532
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/models", "/tmp"}
    assert {v["name"] for v in spec["volumes"]} == {"model-cache", "tmp"}


def test_init_container_pulls_with_the_digest_pin_into_the_cache() -> None:
    digest = "ab" * 32
    init = pod_spec(render(slm(model={"source": "hf://org/repo/m.gguf", "sha256": digest})))["initContainers"][0]
    assert init["name"] == "model-pull"
    args = init["args"]
    assert args[:4] == ["pull", "hf://org/repo/m.gguf", "--dest", "/models"]
    assert args[args.index("--sha256") + 1] == digest
    assert args[args.index("--output") + 1] == "/dev/termination-log"


def test_runtime_container_gets_engine_parameters_and_server_settings() -> None:
    resource = slm(
        parameters={"temperature": 0.2, "topK": 20, "contextLength": 4096, "numThread": 4, "stop": ["</s>"]},
        system="Be brief.",
        template="{{ .System }} {{ .Prompt }}",
        messages=[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        server={"parallel": 4, "maxQueue": 8, "requestTimeout": "2m"},
    )
    values = env(render(resource))
    assert json.loads(values["SLM_MESSAGES"]) == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
    ]
    assert values["SLM_MODEL_SOURCE"] == "ollama://qwen2.5:3b"
    assert values["SLM_MODEL_NAME"] == "qwen2.5:3b"
    assert values["SLM_ENGINE"] == "llama-cpp"
    assert values["SLM_TEMPERATURE"] == "0.2"
    assert values["SLM_TOP_K"] == "20"
    assert values["SLM_CONTEXT_LENGTH"] == "4096"
    assert values["SLM_THREADS"] == "4"
    assert json.loads(values["SLM_STOP"]) == ["</s>"]
    assert values["SLM_SYSTEM"] == "Be brief."
    assert values["SLM_TEMPLATE"] == "{{ .System }} {{ .Prompt }}"
    assert (values["SLM_PARALLEL"], values["SLM_MAX_QUEUE"], values["SLM_REQUEST_TIMEOUT"]) == ("4", "8", "120.0")
    assert values["SLM_HOST"] == "0.0.0.0"


def test_api_key_comes_from_the_secret() -> None:
    values = env(render(slm(server={"apiKeySecretRef": {"name": "key", "key": "token"}})))
    assert values["SLM_API_KEY"] == {"secretKeyRef": {"name": "key", "key": "token"}}


def test_probes_point_at_health_endpoints() -> None:
    container = pod_spec(render(slm()))["containers"][0]
    assert container["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 600
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


@pytest.mark.parametrize(
    ("accelerator", "resource", "selector"),
    [
        (Accelerator.NVIDIA_GPU, "nvidia.com/gpu", {"nvidia.com/gpu.present": "true"}),
        (Accelerator.AMD_GPU, "amd.com/gpu", {"amd.com/gpu.present": "true"}),
        (Accelerator.NPU, "npu.intel.com/accel", {"intel.feature.node.kubernetes.io/npu": "true"}),
    ],
)
def test_accelerators_select_nodes_and_request_devices(
    accelerator: Accelerator, resource: str, selector: dict[str, str]
) -> None:
    objects = render(slm(hardware={"accelerator": "cpu", "count": 2, "nodeSelector": {"zone": "a"}}), accelerator)
    spec = pod_spec(objects)
    assert spec["nodeSelector"] == {**selector, "zone": "a"}
    resources = spec["containers"][0]["resources"]
    assert resources["limits"][resource] == "2" and resources["requests"][resource] == "2"
    assert spec["containers"][0]["image"].endswith("-" + SETTINGS.profile(accelerator).image_variant)
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["slm-operator.io/accelerator"] == accelerator.value


def test_cpu_has_no_device_request_and_keeps_user_resources() -> None:
    objects = render(slm(resources={"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}))
    resources = pod_spec(objects)["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"memory": "8Gi"}}
    assert "nodeSelector" not in pod_spec(objects)


def test_gpu_engine_options_reach_the_runtime() -> None:
    values = env(render(slm(), Accelerator.NVIDIA_GPU))
    assert values["SLM_GPU_LAYERS"] == "-1"
    assert values["SLM_EXECUTION_PROVIDER"] == "cuda"


def test_autoscaling_owns_replicas_and_adds_hpa_and_pdb() -> None:
    objects = render(
        slm(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5, "targetInflightRequests": 4})
    )
    assert "replicas" not in objects["Deployment"]["spec"]
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "assistant"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 5)
    assert hpa["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "slm_requests_inflight"},
                "target": {"type": "AverageValue", "averageValue": "4"},
            },
        }
    ]
    assert objects["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1


def test_autoscaling_without_targets_scales_on_cpu() -> None:
    hpa = render(slm(autoscaling={"enabled": True}))["HorizontalPodAutoscaler"]["spec"]
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 80}


def test_pdb_only_when_more_than_one_replica() -> None:
    assert "PodDisruptionBudget" not in render(slm(replicas=1))
    assert "PodDisruptionBudget" in render(slm(replicas=3))


def test_network_policy_admits_namespace_monitoring_and_peers() -> None:
    peer = {"namespaceSelector": {"matchLabels": {"team": "web"}}}
    policy = render(slm(networkPolicy={"enabled": True, "allowedPeers": [peer]}))["NetworkPolicy"]["spec"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 11434}]
    assert rule["from"][0] == {"podSelector": {}}
    assert rule["from"][1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert rule["from"][2] == peer


def test_service_monitor_only_when_its_crd_exists() -> None:
    assert "ServiceMonitor" not in render(slm())
    monitor = render(slm(), service_monitor_crd=True)["ServiceMonitor"]
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
    assert "ServiceMonitor" not in render(slm(monitoring={"serviceMonitor": False}), service_monitor_crd=True)


def test_operator_creates_a_shared_claim_or_uses_the_given_one() -> None:
    created = render(slm(cache={"volume": "persistentVolumeClaim", "size": "20Gi", "storageClassName": "nfs"}))
    claim = created["PersistentVolumeClaim"]
    assert claim["metadata"]["name"] == "assistant-model-cache"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "nfs",
    }
    volumes = {v["name"]: v for v in pod_spec(created)["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "assistant-model-cache"}
    given = render(slm(cache={"volume": "persistentVolumeClaim", "claimName": "models"}))
    assert "PersistentVolumeClaim" not in given
    assert {v["name"]: v for v in pod_spec(given)["volumes"]}["model-cache"]["persistentVolumeClaim"] == {
        "claimName": "models"
    }


def test_pvc_sources_are_mounted_read_only() -> None:
    spec = pod_spec(render(slm(model={"source": "pvc://shared-models/qwen/model.gguf"})))
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["model-source"]["persistentVolumeClaim"] == {"claimName": "shared-models", "readOnly": True}
    assert "--pvc-root" in spec["initContainers"][0]["args"]


def test_rollout_strategy_and_model_change_annotation() -> None:
    first = render(slm(rollout={"maxSurge": "25%", "maxUnavailable": 1}))["Deployment"]
    assert first["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 1}
    default = render(slm())["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert default == {"maxSurge": 1, "maxUnavailable": 0}
    changed = render(slm(model={"source": "ollama://qwen2.5:7b"}))["Deployment"]
    before = first["spec"]["template"]["metadata"]["annotations"][MODEL_DIGEST_ANNOTATION]
    after = changed["spec"]["template"]["metadata"]["annotations"][MODEL_DIGEST_ANNOTATION]
    assert before != after


def test_pod_extras_merge_without_overriding_operator_labels() -> None:
    objects = render(
        slm(
            pod={
                "labels": {"team": "a", "app.kubernetes.io/instance": "hijack"},
                "annotations": {"owner": "team-a"},
                "env": [{"name": "HF_TOKEN", "value": "x"}],
                "serviceAccountName": "models",
                "priorityClassName": "high",
                "imagePullSecrets": [{"name": "regcred"}],
            },
            image={"runtime": "registry.example.com/runtime:1", "pullPolicy": "Always"},
        )
    )
    template = objects["Deployment"]["spec"]["template"]
    assert template["metadata"]["labels"]["team"] == "a"
    assert template["metadata"]["labels"]["app.kubernetes.io/instance"] == "assistant"
    assert template["metadata"]["annotations"]["owner"] == "team-a"
    spec = template["spec"]
    assert (spec["serviceAccountName"], spec["priorityClassName"]) == ("models", "high")
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["containers"][0]["image"] == "registry.example.com/runtime:1"
    assert spec["containers"][0]["imagePullPolicy"] == "Always"
    assert env(objects)["HF_TOKEN"] == "x"
    assert spec["initContainers"][0]["env"] == [{"name": "HF_TOKEN", "value": "x"}]


@pytest.mark.parametrize("example", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_rendering_is_deterministic(example: Path) -> None:
    (resource,) = load_manifest(example)
    options = RenderOptions(resource.spec.hardware.accelerator if resource.spec.hardware else Accelerator.CPU, True)
    first = json.dumps(render_all(resource, SETTINGS, options))
    second = json.dumps(render_all(copy.deepcopy(resource), OperatorSettings(), options))
    assert first == second


def test_settings_file_overrides_image_and_profiles(tmp_path: Path) -> None:
    config = tmp_path / "operator.yaml"
    config.write_text(
        "runtimeImage: registry.example.com/slm-runtime:9\n"
        "hardwareProfiles:\n  nvidia-gpu:\n    nodeSelector: {gpu: a100}\n    resourceName: nvidia.com/mig-1g.10gb\n"
    )
    settings = load_settings(config)
    objects = {m["kind"]: m for m in render_all(slm(), settings, RenderOptions(Accelerator.NVIDIA_GPU))}
    spec = pod_spec(objects)
    assert spec["nodeSelector"] == {"gpu": "a100"}
    assert spec["containers"][0]["resources"]["limits"]["nvidia.com/mig-1g.10gb"] == "1"
    assert spec["containers"][0]["image"] == "registry.example.com/slm-runtime:9-cuda"


def test_pods_stop_gracefully_within_their_grace_period() -> None:
    """SIGTERM comes after the preStop delay (endpoints gone), then the runtime drains within the grace period."""
    objects = render(slm(server={"drainTimeout": "45s"}))
    spec = pod_spec(objects)
    runtime = spec["containers"][0]
    pre_stop = runtime["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert env(objects)["SLM_DRAIN_TIMEOUT"] == "45.0"
    assert spec["terminationGracePeriodSeconds"] > pre_stop + 45
