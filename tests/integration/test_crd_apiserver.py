"""The generated CRD on the real apiserver: every example is accepted, the CEL rules reject bad objects."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from harness import ROOT, SLMs, example, install_crd
from kubernetes import client
from kubernetes.client.exceptions import ApiException

pytestmark = pytest.mark.cluster

EXAMPLES = sorted(p.name for p in (ROOT / "examples").glob("*.yaml"))


@pytest.fixture(scope="module", autouse=True)
def crd(api: client.ApiClient) -> None:
    install_crd(api)


@pytest.mark.parametrize("name", EXAMPLES)
def test_apiserver_accepts_every_example_and_applies_defaults(api: client.ApiClient, namespace: str, name: str) -> None:
    created = SLMs(api, namespace).create(example(name))
    assert created["spec"]["replicas"] >= 0
    hardware = created["spec"].get("hardware")
    if hardware is not None:
        assert hardware["fallbackAfter"]  # defaulted by the apiserver from the schema when omitted


def _rejection(api: client.ApiClient, namespace: str, spec_changes: dict[str, Any]) -> str:
    manifest = copy.deepcopy(example("gemma3-270m.yaml"))
    manifest["spec"].update(spec_changes)
    with pytest.raises(ApiException) as info:
        SLMs(api, namespace).create(manifest)
    assert info.value.status == 422
    return str(info.value.body)


def test_cel_rejects_fallback_containing_the_primary(api: client.ApiClient, namespace: str) -> None:
    body = _rejection(api, namespace, {"hardware": {"accelerator": "nvidia-gpu", "fallback": ["cpu", "nvidia-gpu"]}})
    assert "spec.hardware.fallback must not contain the primary accelerator" in body


def test_cel_rejects_min_above_max(api: client.ApiClient, namespace: str) -> None:
    body = _rejection(api, namespace, {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}})
    assert "autoscaling.minReplicas must be less than or equal to maxReplicas" in body


def test_cel_rejects_npu_without_onnx(api: client.ApiClient, namespace: str) -> None:
    body = _rejection(api, namespace, {"hardware": {"accelerator": "npu"}})
    assert "the npu accelerator runs only ONNX models on onnxruntime-genai" in body


def test_cel_rejects_engine_format_mismatch(api: client.ApiClient, namespace: str) -> None:
    body = _rejection(api, namespace, {"model": {"source": "ollama://qwen2.5:3b"}, "engine": "onnxruntime-genai"})
    assert "a GGUF model (a .gguf file or an ollama:// model) cannot run on onnxruntime-genai" in body


def test_cel_rejects_cache_claim_rules(api: client.ApiClient, namespace: str) -> None:
    body = _rejection(api, namespace, {"cache": {"volume": "persistentVolumeClaim"}})
    assert "needs claimName (an existing claim) or size" in body


def test_schema_rejects_enums_bounds_and_unknown_fields(api: client.ApiClient, namespace: str) -> None:
    assert "tpu" in _rejection(api, namespace, {"hardware": {"accelerator": "tpu"}})
    assert "spec.parameters.temperature" in _rejection(api, namespace, {"parameters": {"temperature": 6}})
    manifest = copy.deepcopy(example("gemma3-270m.yaml"))
    manifest["spec"]["gpus"] = 2
    custom = client.CustomObjectsApi(api)
    with pytest.raises(ApiException) as info:  # kubectl's default, strict field validation
        custom.create_namespaced_custom_object(
            "slm-operator.io",
            "v1alpha1",
            namespace,
            "slmdeployments",
            {**manifest, "metadata": {"name": "strict", "namespace": namespace}},
            field_validation="Strict",
        )
    assert info.value.status == 400
    assert 'unknown field "spec.gpus"' in json.loads(info.value.body)["message"]


def test_scale_subresource_reads_and_writes_replicas(api: client.ApiClient, namespace: str) -> None:
    slms = SLMs(api, namespace)
    slms.create(example("gemma3-270m.yaml"))
    custom = client.CustomObjectsApi(api)
    custom.patch_namespaced_custom_object_scale(
        "slm-operator.io", "v1alpha1", namespace, "slmdeployments", "gemma3-270m", {"spec": {"replicas": 3}}
    )
    assert slms.get("gemma3-270m")["spec"]["replicas"] == 3
