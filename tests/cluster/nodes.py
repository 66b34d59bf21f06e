"""The simulated (kwok) nodes of the test cluster, derived from the operator's hardware profiles.

Labels, taints and extended-resource names come from ``slm_operator.hardware.DEFAULT_PROFILES`` so the
renderer and the cluster it is tested against cannot disagree. Only sizes and names are chosen here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm_operator.api.enums import Accelerator
from slm_operator.hardware import DEFAULT_PROFILES, HardwareProfile

__all__ = ["KWOK_ANNOTATION", "TEST_NODES", "TestNode", "node_manifest", "node_manifests", "taints_for"]

KWOK_ANNOTATION = {"kwok.x-k8s.io/node": "fake"}
"""kwok manages only nodes with this annotation (its --manage-nodes-with-annotation-selector)."""


@dataclass(frozen=True)
class TestNode:
    """One simulated node: its accelerator and realistic capacity."""

    __test__ = False  # not a pytest test class

    name: str
    accelerator: Accelerator
    cpu: str
    memory: str
    devices: int = 0
    pods: int = 110
    ephemeral_storage: str = "200Gi"

    @property
    def profile(self) -> HardwareProfile:
        """The profile this node serves (from the operator's defaults)."""
        return DEFAULT_PROFILES[self.accelerator]


TEST_NODES: tuple[TestNode, ...] = (
    TestNode("slm-cpu-0", Accelerator.CPU, cpu="64", memory="256Gi"),
    TestNode("slm-cpu-1", Accelerator.CPU, cpu="64", memory="256Gi"),
    TestNode("slm-nvidia-gpu-0", Accelerator.NVIDIA_GPU, cpu="32", memory="256Gi", devices=4),
    TestNode("slm-amd-gpu-0", Accelerator.AMD_GPU, cpu="32", memory="256Gi", devices=2),
    TestNode("slm-intel-gpu-0", Accelerator.INTEL_GPU, cpu="16", memory="64Gi", devices=1),
    TestNode("slm-npu-0", Accelerator.NPU, cpu="8", memory="32Gi", devices=1),
)


def taints_for(profile: HardwareProfile) -> list[dict[str, str]]:
    """The taints a device node usually carries: exactly those the profile's tolerations tolerate."""
    taints = []
    for toleration in profile.tolerations:
        value = toleration.get("value") if toleration.get("operator") == "Equal" else "present"
        taint = {"key": str(toleration["key"]), "effect": str(toleration.get("effect", "NoSchedule"))}
        if value:
            taint["value"] = str(value)
        taints.append(taint)
    return taints


def node_manifest(node: TestNode, profile: HardwareProfile | None = None) -> dict[str, Any]:
    """A Node object that kwok will manage, labelled, tainted and sized for its accelerator."""
    profile = profile or node.profile
    resources = {
        "cpu": node.cpu,
        "memory": node.memory,
        "pods": str(node.pods),
        "ephemeral-storage": node.ephemeral_storage,
    }
    if profile.resource_name:
        if node.devices < 1:
            raise ValueError(f"node {node.name}: accelerator {node.accelerator} needs devices >= 1")
        resources[profile.resource_name] = str(node.devices)
    labels = {
        "kubernetes.io/hostname": node.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"kwok-{node.accelerator.value}",
        "type": "kwok",
        **profile.node_selector,
    }
    spec: dict[str, Any] = {}
    if taints := taints_for(profile):
        spec["taints"] = taints
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node.name, "labels": labels, "annotations": dict(KWOK_ANNOTATION)},
        "spec": spec,
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


def node_manifests(nodes: tuple[TestNode, ...] = TEST_NODES) -> list[dict[str, Any]]:
    """Every test node's manifest."""
    return [node_manifest(node) for node in nodes]
