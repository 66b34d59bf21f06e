"""kind-config.yaml: a control plane plus a cpu pool and a simulated nvidia-gpu pool labelled and tainted the way
the operator's hardware profiles expect, so examples land where they would on a real cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES

KIND: dict[str, Any] = yaml.safe_load((Path(__file__).resolve().parents[3] / "kind-config.yaml").read_text())


def pool(name: str) -> dict[str, Any]:
    (node,) = [n for n in KIND["nodes"] if n.get("labels", {}).get("slm-operator.io/pool") == name]
    found: dict[str, Any] = node
    return found


def taints(node: dict[str, Any]) -> list[dict[str, str]]:
    found: list[dict[str, str]] = []
    for patch in node.get("kubeadmConfigPatches", []):
        document = yaml.safe_load(patch)
        found += document["nodeRegistration"].get("taints", [])
    return found


def test_a_control_plane_and_two_worker_pools() -> None:
    assert KIND["kind"] == "Cluster" and KIND["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    assert [n["role"] for n in KIND["nodes"]] == ["control-plane", "worker", "worker"]


def test_cpu_pool_takes_cpu_pods() -> None:
    node = pool("cpu")
    assert DEFAULT_PROFILES[Accelerator.CPU].node_selector.items() <= node["labels"].items()
    assert taints(node) == []


def test_gpu_pool_matches_the_nvidia_profile() -> None:
    profile = DEFAULT_PROFILES[Accelerator.NVIDIA_GPU]
    node = pool("nvidia-gpu")
    assert profile.node_selector.items() <= node["labels"].items()
    (taint,) = taints(node)
    assert any(t["key"] == taint["key"] and t["effect"] == taint["effect"] for t in profile.tolerations)
    cpu_selector = DEFAULT_PROFILES[Accelerator.CPU].node_selector
    assert not cpu_selector or not cpu_selector.items() <= node["labels"].items()
