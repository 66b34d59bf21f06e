"""The CRD and the API reference are generated from the models: structural, complete and fresh."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from slm_operator.apidoc import api_markdown
from slm_operator.crd import crd_manifest, crd_yaml

ROOT = Path(__file__).resolve().parents[3]
CRD_FILES = [
    ROOT / "crds/slm-operator.io_slmdeployments.yaml",
    ROOT / "charts/slm-operator/crds/slm-operator.io_slmdeployments.yaml",
]
# Fields deliberately left open: Kubernetes types passed to the pod as they are.
PASS_THROUGH = {
    ".spec.hardware.affinity",
    ".spec.networkPolicy.allowedPeers[]",
    ".spec.pod.env[].valueFrom",
}


def _schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(path: str, node: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from _walk(f"{path}.{name}", child)
    if "items" in node:
        yield from _walk(f"{path}[]", node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        yield from _walk(f"{path}{{}}", node["additionalProperties"])


@pytest.mark.parametrize("path", CRD_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_crd_files_are_fresh(path: Path) -> None:
    assert path.read_text(encoding="utf-8") == crd_yaml(), "stale CRD: run `make crds`"


def test_api_reference_is_fresh() -> None:
    assert (ROOT / "docs/api.md").read_text(encoding="utf-8") == api_markdown(), "stale docs: run `make docs`"


def test_crd_schema_is_structural() -> None:
    for path, node in _walk("", _schema()):
        if path == ".metadata":
            assert node == {"type": "object"}
            continue
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert not {"$ref", "nullable", "uniqueItems", "title", "patternProperties", "allOf", "oneOf"} & node.keys(), (
            path
        )
        if node.get("type") == "object":
            open_ended = node.get("x-kubernetes-preserve-unknown-fields") is True
            assert "properties" in node or "additionalProperties" in node or open_ended, f"{path} is untyped"
            if open_ended:
                assert path in PASS_THROUGH, f"{path} accepts unknown fields but is not a deliberate pass-through"
        if node.get("type") == "array":
            assert "items" in node, f"{path} has no item schema"


def test_crd_identity_subresources_and_columns() -> None:
    spec = crd_manifest()["spec"]
    assert spec["group"] == "slm-operator.io" and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == ["slm", "slmd"] and spec["names"]["categories"] == ["ai"]
    version = spec["versions"][0]
    assert version["name"] == "v1alpha1"
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Model", "Engine", "Hardware", "Ready", "Phase", "Age"]


def test_cross_field_rules_are_in_the_crd() -> None:
    rules = [(p, r["rule"]) for p, n in _walk("", _schema()) for r in n.get("x-kubernetes-validations", [])]
    where = {p for p, _ in rules}
    assert {"", ".spec", ".spec.hardware", ".spec.cache", ".spec.autoscaling"} <= where
    assert any("minReplicas <= self.maxReplicas" in r for _, r in rules)
    assert any("'npu'" in r for _, r in rules)


def test_resource_quantities_are_int_or_string_with_the_kubernetes_pattern() -> None:
    requests = _schema()["properties"]["spec"]["properties"]["resources"]["properties"]["requests"]
    value = requests["additionalProperties"]
    assert value["x-kubernetes-int-or-string"] is True and "pattern" in value


def test_generated_yaml_is_deterministic_and_alias_free() -> None:
    text = crd_yaml()
    assert text == crd_yaml()
    assert "&id" not in text and "*id" not in text
    assert yaml.safe_load(text)["kind"] == "CustomResourceDefinition"
