"""Hardware profiles: how each accelerator maps onto nodes, device-plugin resources and engine options.

This table is the single place that names node labels and extended-resource names. The renderer uses it to
place pods, and the test control plane (tests/cluster) uses it to label and size its simulated kwok nodes, so
the two can never disagree. Operators may override it through their settings (the Helm chart's values).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from slm_operator.api.enums import Accelerator

__all__ = ["DEFAULT_PROFILES", "HardwareProfile", "profile_for"]


class HardwareProfile(BaseModel):
    """Placement and engine settings for one accelerator kind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    accelerator: Accelerator
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a pod of this accelerator must match."
    )
    tolerations: tuple[dict[str, Any], ...] = Field(
        default=(), description="Tolerations for the taints device nodes usually carry."
    )
    resource_name: str | None = Field(
        default=None, description="Extended resource requested per device (device plugin), None for cpu."
    )
    llama_gpu_layers: int = Field(
        default=0, description="Layers llama.cpp offloads to the device (-1 = all, 0 = none)."
    )
    onnx_execution_provider: str = Field(
        default="cpu", description="onnxruntime-genai execution provider for this device."
    )
    image_variant: str = Field(default="cpu", description="Runtime image variant (tag suffix) built for it.")


def _gpu_toleration(key: str) -> dict[str, Any]:
    return {"key": key, "operator": "Exists", "effect": "NoSchedule"}


DEFAULT_PROFILES: dict[Accelerator, HardwareProfile] = {
    Accelerator.CPU: HardwareProfile(accelerator=Accelerator.CPU),
    Accelerator.NVIDIA_GPU: HardwareProfile(
        accelerator=Accelerator.NVIDIA_GPU,
        node_selector={"nvidia.com/gpu.present": "true"},
        tolerations=(_gpu_toleration("nvidia.com/gpu"),),
        resource_name="nvidia.com/gpu",
        llama_gpu_layers=-1,
        onnx_execution_provider="cuda",
        image_variant="cuda",
    ),
    Accelerator.AMD_GPU: HardwareProfile(
        accelerator=Accelerator.AMD_GPU,
        node_selector={"amd.com/gpu.present": "true"},
        tolerations=(_gpu_toleration("amd.com/gpu"),),
        resource_name="amd.com/gpu",
        llama_gpu_layers=-1,
        onnx_execution_provider="rocm",
        image_variant="rocm",
    ),
    Accelerator.INTEL_GPU: HardwareProfile(
        accelerator=Accelerator.INTEL_GPU,
        node_selector={"intel.feature.node.kubernetes.io/gpu": "true"},
        resource_name="gpu.intel.com/i915",
        llama_gpu_layers=-1,
        onnx_execution_provider="openvino",
        image_variant="intel",
    ),
    Accelerator.NPU: HardwareProfile(
        accelerator=Accelerator.NPU,
        node_selector={"intel.feature.node.kubernetes.io/npu": "true"},
        resource_name="npu.intel.com/accel",
        onnx_execution_provider="openvino",
        image_variant="openvino",
    ),
}


def profile_for(
    accelerator: Accelerator, overrides: dict[Accelerator, HardwareProfile] | None = None
) -> HardwareProfile:
    """The profile for an accelerator, taking operator overrides first."""
    if overrides and accelerator in overrides:
        return overrides[accelerator]
    return DEFAULT_PROFILES[accelerator]
