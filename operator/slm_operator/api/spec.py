"""SLMDeployment .spec: what a team declares about one model service."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Self

from pydantic import Field, StringConstraints, field_validator, model_validator

from slm_operator.api.base import ApiModel, CelRule
from slm_operator.api.enums import Accelerator, CacheVolume, Engine, ModelFormat
from slm_operator.api.quantity import Duration, Quantity, parse_duration_seconds, parse_quantity
from slm_operator.api.runtime_bounds import runtime_bounds
from slm_runtime.metrics import REQUESTS_INFLIGHT
from slm_runtime.source import SCHEMES, ModelSource, SourceError, infer_format, parse_source

__all__ = [
    "AutoscalingSpec",
    "CacheSpec",
    "ChatMessage",
    "EnvVar",
    "HardwareSpec",
    "ImageSpec",
    "LocalObjectReference",
    "ModelSpec",
    "MonitoringSpec",
    "NetworkPolicySpec",
    "Parameters",
    "PodSpec",
    "ResourcesSpec",
    "RolloutSpec",
    "SLMDeploymentSpec",
    "SecretKeySelector",
    "ServerSpec",
    "Toleration",
]

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SOURCE_PATTERN = r"^(" + "|".join(SCHEMES) + r")://.+$"
PERCENT_OR_INT = r"^[0-9]+%?$"

PassThrough = Annotated[dict[str, Any], Field(json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})]
IntOrPercent = Annotated[
    int | Annotated[str, StringConstraints(pattern=r"^[0-9]+%$")],
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


def _parse(source: str) -> ModelSource:
    try:
        return parse_source(source)
    except SourceError as exc:
        raise ValueError(str(exc)) from None


class ModelSpec(ApiModel):
    """Where the model comes from and how it is stored."""

    source: str = Field(
        max_length=2048,
        json_schema_extra={"pattern": SOURCE_PATTERN},  # checked by _check_source with a friendlier message
        description=(
            "Model location: ollama://name[:tag], hf://org/repo/path/file.gguf[@revision], https://host/path, "
            "pvc://claim/path, file:///path, or package://python-distribution for a model shipped in a Python "
            "package."
        ),
    )
    format: ModelFormat | None = Field(
        default=None,
        description="Weights format, gguf or onnx. Inferred from the source when omitted (.gguf files, "
        "Ollama models and packaged models are gguf; .onnx files and folders ending in / are onnx).",
    )
    sha256: str | None = Field(
        default=None,
        pattern=r"^[a-fA-F0-9]{64}$",
        description="Expected SHA-256 of the model file (64 hex digits). Pods refuse a model whose digest differs.",
    )
    name: str | None = Field(
        default=None,
        max_length=253,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$",
        description="Model name clients put in requests (Ollama's `model`, OpenAI's `model`). "
        "Defaults to the source's name, e.g. qwen2.5:3b.",
    )

    @field_validator("source")
    @classmethod
    def _check_source(cls, value: str) -> str:
        _parse(value)
        return value

    @field_validator("sha256")
    @classmethod
    def _lower_digest(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @property
    def parsed_source(self) -> ModelSource:
        return _parse(self.source)

    def resolved_format(self) -> ModelFormat | None:
        """The declared format, else the one the source implies, else None."""
        if self.format is not None:
            return self.format
        inferred = infer_format(self.parsed_source)
        return ModelFormat(inferred) if inferred else None

    def served_name(self) -> str:
        """The model name the runtime answers to."""
        if self.name:
            return self.name
        src = self.parsed_source
        if src.tag:
            return f"{src.name}:{src.tag}" if src.namespace == "library" else f"{src.namespace}/{src.name}:{src.tag}"
        base = src.basename
        return re.sub(r"\.(gguf|onnx)$", "", base, flags=re.IGNORECASE) or src.name


class Parameters(ApiModel):
    """Generation defaults, with the meaning of Ollama's Modelfile PARAMETER lines. Omitted: the runtime default.

    Numeric bounds are the runtime's own (api/runtime_bounds.py): what the spec accepts, the runtime loads.
    """

    temperature: float | None = Field(
        default=None, description="Sampling temperature; 0 is greedy (temperature).", **runtime_bounds("temperature")
    )
    top_p: float | None = Field(
        default=None, description="Nucleus sampling probability mass (top_p).", **runtime_bounds("top_p")
    )
    top_k: int | None = Field(
        default=None,
        description="Sample among the k most likely tokens (top_k); 0 disables.",
        **runtime_bounds("top_k"),
    )
    min_p: float | None = Field(
        default=None, description="Minimum probability relative to the top token (min_p).", **runtime_bounds("min_p")
    )
    context_length: int | None = Field(
        default=None,
        description="Context window of each generation in tokens (Ollama num_ctx); a pod holds `server.parallel` "
        "of them (docs/batching.md).",
        **runtime_bounds("context_length"),
    )
    num_predict: int | None = Field(
        default=None,
        description="Maximum tokens to generate; -1 until the context is full (num_predict).",
        **runtime_bounds("num_predict"),
    )
    repeat_penalty: float | None = Field(
        default=None,
        description="Penalty for repeated tokens; 1 is none (repeat_penalty).",
        **runtime_bounds("repeat_penalty"),
    )
    repeat_last_n: int | None = Field(
        default=None,
        description="How far back repeat_penalty looks; -1 = whole context (repeat_last_n).",
        **runtime_bounds("repeat_last_n"),
    )
    presence_penalty: float | None = Field(
        default=None, description="OpenAI-style presence penalty.", **runtime_bounds("presence_penalty")
    )
    frequency_penalty: float | None = Field(
        default=None, description="OpenAI-style frequency penalty.", **runtime_bounds("frequency_penalty")
    )
    seed: int | None = Field(default=None, description="Random seed for reproducible sampling.")
    stop: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = Field(
        default=None, max_length=16, description="Stop sequences; generation ends before any of them."
    )
    num_thread: int | None = Field(
        default=None, description="CPU threads for generation (num_thread).", **runtime_bounds("num_thread")
    )
    num_batch: int | None = Field(
        default=None, description="Prompt-processing batch size (num_batch).", **runtime_bounds("num_batch")
    )


class ChatMessage(ApiModel):
    """A message placed before every conversation (Ollama's Modelfile MESSAGE)."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(max_length=65536, description="The message text.")


class Toleration(ApiModel):
    """A Kubernetes toleration (core/v1 Toleration)."""

    key: str | None = Field(
        default=None, max_length=316, description="Taint key; empty with operator Exists matches all."
    )
    operator: Literal["Exists", "Equal"] | None = Field(default=None, description="Exists or Equal (default Equal).")
    value: str | None = Field(default=None, max_length=63, description="Taint value for operator Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to tolerate; empty matches all."
    )
    toleration_seconds: int | None = Field(default=None, description="For NoExecute: how long the pod stays bound.")


class HardwareSpec(ApiModel):
    """Which accelerator to run on, and what to try when it cannot be scheduled."""

    cel_rules = (
        {
            "rule": "!has(self.fallback) || !(self.accelerator in self.fallback)",
            "message": "spec.hardware.fallback must not contain the primary accelerator; remove it from the list",
            "fieldPath": ".fallback",
        },
    )

    accelerator: Accelerator = Field(default=Accelerator.CPU, description="Primary accelerator.")
    count: int = Field(default=1, ge=1, le=16, description="Devices per pod (ignored for cpu).")
    fallback: list[Accelerator] | None = Field(
        default=None,
        max_length=4,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Accelerators tried in order when pods stay unschedulable for fallbackAfter.",
    )
    fallback_after: Duration = Field(
        default="120s", description="How long pods may stay unschedulable before the next fallback is tried."
    )
    node_selector: dict[str, str] | None = Field(
        default=None, description="Node labels, merged with the accelerator profile's selector."
    )
    tolerations: list[Toleration] | None = Field(
        default=None, max_length=32, description="Extra tolerations, added to the profile's."
    )
    affinity: PassThrough | None = Field(default=None, description="A core/v1 Affinity, passed to the pod as is.")

    @field_validator("fallback")
    @classmethod
    def _unique(cls, value: list[Accelerator] | None) -> list[Accelerator] | None:
        if value:
            seen: set[Accelerator] = set()
            for item in value:
                if item in seen:
                    raise ValueError(f"'{item.value}' appears twice; list each accelerator once")
                seen.add(item)
        return value

    @model_validator(mode="after")
    def _fallback_excludes_primary(self) -> Self:
        if self.fallback and self.accelerator in self.fallback:
            raise ValueError(
                f"fallback must not contain the primary accelerator '{self.accelerator.value}'; remove it from the list"
            )
        return self

    def tiers(self) -> list[Accelerator]:
        """The primary accelerator followed by the fallbacks, in the order they are tried."""
        return [self.accelerator, *(self.fallback or [])]


ResourceName = Annotated[str, StringConstraints(pattern=r"^([a-z0-9.-]+/)?[a-z0-9]([-a-z0-9_.]*[a-z0-9])?$")]


class ResourcesSpec(ApiModel):
    """Compute resources of the model-server container (core/v1 ResourceRequirements)."""

    requests: dict[ResourceName, Quantity] | None = Field(default=None, description="Minimum resources, e.g. cpu: 2.")
    limits: dict[ResourceName, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. memory: 8Gi."
    )

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Self:
        for name, limit in (self.limits or {}).items():
            request = (self.requests or {}).get(name)
            if request is not None and parse_quantity(request) > parse_quantity(limit):
                raise ValueError(
                    f"requests.{name} ({request}) exceeds limits.{name} ({limit}); raise the limit or lower the request"
                )
        return self


class CacheSpec(ApiModel):
    """Where pods keep downloaded models."""

    cel_rules = (
        {
            "rule": "self.volume == 'persistentVolumeClaim' || (!has(self.claimName) && !has(self.storageClassName))",
            "message": "claimName and storageClassName apply only with volume: persistentVolumeClaim",
        },
        {
            "rule": "self.volume != 'persistentVolumeClaim' || has(self.claimName) || has(self.size)",
            "message": "volume: persistentVolumeClaim needs claimName (an existing claim) or size "
            "(the operator creates one)",
        },
        {
            "rule": "!has(self.claimName) || !has(self.storageClassName)",
            "message": "storageClassName applies only to a claim the operator creates; drop it or drop claimName",
        },
    )

    volume: CacheVolume = Field(
        default=CacheVolume.EMPTY_DIR, description="emptyDir (per pod) or persistentVolumeClaim."
    )
    size: Quantity | None = Field(default=None, description="Size limit of the emptyDir or size of the created claim.")
    claim_name: str | None = Field(
        default=None,
        max_length=253,
        pattern=DNS_LABEL,
        description="An existing (ReadWriteMany) claim shared by replicas.",
    )
    storage_class_name: str | None = Field(
        default=None, max_length=253, description="Storage class of the claim the operator creates."
    )

    @model_validator(mode="after")
    def _claim_rules(self) -> Self:
        pvc = self.volume is CacheVolume.PERSISTENT_VOLUME_CLAIM
        if not pvc and (self.claim_name or self.storage_class_name):
            raise ValueError("claimName and storageClassName apply only with volume: persistentVolumeClaim")
        if pvc and not (self.claim_name or self.size):
            raise ValueError(
                "volume: persistentVolumeClaim needs claimName (an existing claim) or size (the operator creates one)"
            )
        if self.claim_name and self.storage_class_name:
            raise ValueError("storageClassName applies only to a claim the operator creates; drop it or drop claimName")
        return self


class SecretKeySelector(ApiModel):
    """A key in a Secret of the same namespace."""

    name: str = Field(max_length=253, pattern=DNS_LABEL, description="Secret name.")
    key: str = Field(max_length=253, pattern=r"^[-._a-zA-Z0-9]+$", description="Key within the Secret.")


class ServerSpec(ApiModel):
    """The runtime's HTTP server."""

    port: int = Field(
        default=11434, ge=1024, le=65535, description="Port of the Ollama/OpenAI API (Ollama's is 11434)."
    )
    parallel: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Generations decoded together per pod (continuous batching with llama-cpp); each has "
        "`contextLength` tokens of KV cache of its own (docs/batching.md).",
    )
    max_queue: int = Field(
        default=64, ge=0, le=100000, description="Requests waiting beyond `parallel`; more get HTTP 503 (server busy)."
    )
    api_key_secret_ref: SecretKeySelector | None = Field(
        default=None, description="Secret key holding the bearer token clients must send; none: no auth."
    )
    keep_alive: Duration | None = Field(
        default=None,
        description="Accepted for Ollama compatibility; a pod keeps its model loaded for its lifetime, whatever "
        "keep_alive requests send (scale to zero frees the memory of an idle model: `spec.autoscaling`).",
    )
    request_timeout: Duration = Field(default="600s", description="Longest a single request may run.")
    drain_timeout: Duration = Field(
        default="30s",
        description="When a pod is stopped (rollout, scale-down), how long it keeps finishing the requests in "
        "flight, admitting none, before it exits; the pod's termination grace period allows for it.",
    )


SCALE_TO_ZERO_NEEDS_INFLIGHT = (
    "spec.autoscaling.minReplicas: 0 needs a KEDA ScaledObject to wake the model: set "
    "spec.autoscaling.targetInflightRequests (and run slm-gateway, which holds requests while the model wakes), "
    "or set minReplicas to 1 or more"
)
# The autoscaling/v2 API refuses a behavior.scale{Up,Down}.stabilizationWindowSeconds above one hour.
MAX_STABILIZATION = "1h"
MIN_POLLING_INTERVAL = "1s"
_DURATION_LENGTH = 32


def _stabilization_rule(field: str, direction: str) -> CelRule:
    return {
        "rule": f"!has(self.{field}) || duration(self.{field}) <= duration('{MAX_STABILIZATION}')",
        "message": f"spec.autoscaling.{field} must be at most {MAX_STABILIZATION} (the HorizontalPodAutoscaler's "
        f"behavior.{direction}.stabilizationWindowSeconds allows 3600 at most); shorten it",
        "fieldPath": f".{field}",
    }


class AutoscalingSpec(ApiModel):
    """Horizontal autoscaling of the model server: an HPA on CPU, or a KEDA ScaledObject on the requests in flight
    (which can also scale an idle model to zero; docs/autoscaling.md)."""

    cel_rules = (
        {
            "rule": "self.minReplicas <= self.maxReplicas",
            "message": "autoscaling.minReplicas must be less than or equal to maxReplicas",
            "fieldPath": ".minReplicas",
        },
        {
            "rule": "self.minReplicas > 0 || has(self.targetInflightRequests)",
            "message": SCALE_TO_ZERO_NEEDS_INFLIGHT,
            "fieldPath": ".minReplicas",
        },
        {
            "rule": f"duration(self.pollingInterval) >= duration('{MIN_POLLING_INTERVAL}')",
            "message": f"spec.autoscaling.pollingInterval must be at least {MIN_POLLING_INTERVAL} (KEDA checks its "
            "triggers every whole number of seconds); raise it",
            "fieldPath": ".pollingInterval",
        },
        _stabilization_rule("scaleUpStabilization", "scaleUp"),
        _stabilization_rule("scaleDownStabilization", "scaleDown"),
    )

    enabled: bool = Field(default=False, description="Autoscale; the autoscaler then owns the replica count.")
    min_replicas: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="Fewest replicas. 0 scales an idle model to zero (after scaleToZeroAfter without a request in "
        "flight); it needs targetInflightRequests (KEDA) and slm-gateway, which holds requests while the model wakes.",
    )
    max_replicas: int = Field(default=3, ge=1, le=1000, description="Most replicas.")
    target_inflight_requests: int | None = Field(
        default=None,
        ge=1,
        le=10000,
        description=f"Target requests in flight (running + waiting) per pod, the runtime's {REQUESTS_INFLIGHT} "
        "gauge read from Prometheus by a KEDA ScaledObject (an HPA on the pods metric where KEDA is not installed).",
    )
    target_cpu_utilization: int | None = Field(
        default=None,
        alias="targetCPUUtilization",
        ge=1,
        le=100,
        description="Target CPU utilization percent; 80 when no target is set.",
    )
    scale_to_zero_after: Duration = Field(
        default="5m",
        max_length=_DURATION_LENGTH,
        description="With minReplicas 0: how long no request may be in flight before the model goes to zero "
        "replicas (KEDA's cooldownPeriod; a new model gets this long to load before its first scale-down).",
    )
    polling_interval: Duration = Field(
        default="15s",
        max_length=_DURATION_LENGTH,
        description="How often KEDA checks the triggers (whole seconds, at least 1s); also bounds how fast a "
        "model at zero starts waking.",
    )
    scale_up_stabilization: Duration | None = Field(
        default=None,
        max_length=_DURATION_LENGTH,
        description="The HPA's behavior.scaleUp.stabilizationWindowSeconds (at most 1h); the HPA default "
        "(0s) when omitted.",
    )
    scale_down_stabilization: Duration | None = Field(
        default=None,
        max_length=_DURATION_LENGTH,
        description="The HPA's behavior.scaleDown.stabilizationWindowSeconds (at most 1h); the HPA default "
        "(5m) when omitted.",
    )

    @model_validator(mode="after")
    def _bounds(self) -> Self:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"minReplicas ({self.min_replicas}) must be less than or equal to maxReplicas ({self.max_replicas})"
            )
        if self.min_replicas == 0 and self.target_inflight_requests is None:
            raise ValueError(SCALE_TO_ZERO_NEEDS_INFLIGHT.removeprefix("spec.autoscaling."))
        if parse_duration_seconds(self.polling_interval) < parse_duration_seconds(MIN_POLLING_INTERVAL):
            raise ValueError(
                f"pollingInterval ({self.polling_interval}) must be at least {MIN_POLLING_INTERVAL} (KEDA checks its "
                "triggers every whole number of seconds); raise it"
            )
        for name, value in (
            ("scaleUpStabilization", self.scale_up_stabilization),
            ("scaleDownStabilization", self.scale_down_stabilization),
        ):
            if value is not None and parse_duration_seconds(value) > parse_duration_seconds(MAX_STABILIZATION):
                raise ValueError(
                    f"{name} ({value}) must be at most {MAX_STABILIZATION} (the HorizontalPodAutoscaler's "
                    "stabilizationWindowSeconds allows 3600 at most); shorten it"
                )
        return self

    @property
    def scales_to_zero(self) -> bool:
        """Whether this asks for an idle model to go to zero replicas."""
        return self.enabled and self.min_replicas == 0

    @property
    def inflight(self) -> bool:
        """Whether this asks for scaling on the requests in flight (KEDA's Prometheus scaler)."""
        return self.enabled and (self.target_inflight_requests is not None or self.min_replicas == 0)


class RolloutSpec(ApiModel):
    """How a changed model or setting replaces running pods."""

    max_surge: IntOrPercent = Field(default=1, description="Extra pods during a rollout (number or percent).")
    max_unavailable: IntOrPercent = Field(default=0, description="Pods that may be unavailable during a rollout.")

    @model_validator(mode="after")
    def _not_both_zero(self) -> Self:
        if str(self.max_surge) in ("0", "0%") and str(self.max_unavailable) in ("0", "0%"):
            raise ValueError("maxSurge and maxUnavailable cannot both be 0; a rollout could never progress")
        return self


class MonitoringSpec(ApiModel):
    """Prometheus integration."""

    service_monitor: bool = Field(
        default=True, description="Create a ServiceMonitor when the Prometheus Operator's CRD exists."
    )
    interval: Duration = Field(default="30s", description="Scrape interval.")


class NetworkPolicySpec(ApiModel):
    """A NetworkPolicy that limits who reaches the model server."""

    enabled: bool = Field(default=False, description="Create the NetworkPolicy.")
    allowed_peers: list[PassThrough] | None = Field(
        default=None, max_length=32, description="Extra networking.k8s.io/v1 NetworkPolicyPeer entries allowed in."
    )
    monitoring_namespace: str = Field(
        default="monitoring", max_length=63, pattern=DNS_LABEL, description="Namespace whose pods may scrape /metrics."
    )


class ImageSpec(ApiModel):
    """Container image overrides."""

    runtime: str | None = Field(
        default=None, max_length=1024, description="Runtime image instead of the operator's default."
    )
    pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(default=None, description="imagePullPolicy.")


class LocalObjectReference(ApiModel):
    """A reference by name to an object in the same namespace."""

    name: str = Field(max_length=253, description="Object name.")


class EnvVar(ApiModel):
    """An environment variable of the model-server container (core/v1 EnvVar)."""

    name: str = Field(max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", description="Variable name.")
    value: str | None = Field(default=None, description="Literal value.")
    value_from: PassThrough | None = Field(default=None, description="A core/v1 EnvVarSource.")


class PodSpec(ApiModel):
    """Extras merged into the pods the operator creates."""

    annotations: dict[str, str] | None = Field(default=None, description="Pod annotations.")
    labels: dict[str, str] | None = Field(default=None, description="Pod labels (the operator's own labels win).")
    env: list[EnvVar] | None = Field(default=None, max_length=128, description="Extra environment variables.")
    image_pull_secrets: list[LocalObjectReference] | None = Field(default=None, description="Registry credentials.")
    priority_class_name: str | None = Field(default=None, max_length=253, description="PriorityClass of the pods.")
    service_account_name: str | None = Field(
        default=None, max_length=253, pattern=DNS_LABEL, description="ServiceAccount the pods run as."
    )


CPU_SCALING_NEEDS_REQUEST = (
    "spec.autoscaling scales on CPU utilization (targetCPUUtilization, the default without "
    "targetInflightRequests), which is measured against the pod's cpu request, and spec.resources sets none: add "
    "spec.resources.requests.cpu, or scale on targetInflightRequests alone"
)


def _gguf_hint(fmt: ModelFormat | None) -> str:
    return "gguf models run on llama-cpp" if fmt is ModelFormat.GGUF else "onnx models run on onnxruntime-genai"


class SLMDeploymentSpec(ApiModel):
    """The desired state of one small-language-model service."""

    cel_rules = (
        {
            "rule": "!has(self.engine) || !has(self.model.format) || "
            "((self.engine == 'llama-cpp') == (self.model.format == 'gguf'))",
            "message": "spec.engine does not match spec.model.format: gguf models run on llama-cpp, "
            "onnx models on onnxruntime-genai",
        },
        {
            "rule": "!has(self.engine) || self.engine != 'onnxruntime-genai' || "
            "!(self.model.source.endsWith('.gguf') || self.model.source.startsWith('ollama://'))",
            "message": "a GGUF model (a .gguf file or an ollama:// model) cannot run on onnxruntime-genai; "
            "set spec.engine: llama-cpp or use an ONNX model",
        },
        {
            "rule": "!has(self.hardware) || (self.hardware.accelerator != 'npu' && "
            "!(has(self.hardware.fallback) && 'npu' in self.hardware.fallback)) || "
            "(has(self.engine) && self.engine == 'onnxruntime-genai') || "
            "(has(self.model.format) && self.model.format == 'onnx')",
            "message": "the npu accelerator runs only ONNX models on onnxruntime-genai; set spec.engine: "
            "onnxruntime-genai (or spec.model.format: onnx) or choose another accelerator",
        },
        {
            "rule": "!has(self.autoscaling) || !self.autoscaling.enabled || "
            "(has(self.autoscaling.targetInflightRequests) && !has(self.autoscaling.targetCPUUtilization)) || "
            "!has(self.resources) || !has(self.resources.requests) || size(self.resources.requests) == 0 || "
            "'cpu' in self.resources.requests || (has(self.resources.limits) && 'cpu' in self.resources.limits)",
            "message": CPU_SCALING_NEEDS_REQUEST,
        },
    )

    model: ModelSpec = Field(description="The model to serve.")
    engine: Engine | None = Field(
        default=None, description="Inference engine; llama-cpp for gguf, onnxruntime-genai for onnx when omitted."
    )
    parameters: Parameters | None = Field(default=None, description="Generation defaults (Modelfile PARAMETER).")
    system: str | None = Field(default=None, max_length=65536, description="System prompt (Modelfile SYSTEM).")
    template: str | None = Field(
        default=None,
        max_length=65536,
        description="Prompt template in Ollama's Go-template form (Modelfile TEMPLATE); the model's own when omitted.",
    )
    messages: list[ChatMessage] | None = Field(
        default=None, max_length=64, description="Messages placed before every conversation (Modelfile MESSAGE)."
    )
    replicas: int = Field(default=1, ge=0, le=1000, description="Pods to run; ignored while autoscaling is enabled.")
    hardware: HardwareSpec | None = Field(default=None, description="Accelerator, fallbacks and placement.")
    resources: ResourcesSpec | None = Field(default=None, description="Container resources.")
    cache: CacheSpec | None = Field(default=None, description="Model cache volume.")
    server: ServerSpec | None = Field(default=None, description="HTTP server settings.")
    autoscaling: AutoscalingSpec | None = Field(default=None, description="Horizontal autoscaling.")
    rollout: RolloutSpec | None = Field(default=None, description="Rolling-update settings.")
    monitoring: MonitoringSpec | None = Field(default=None, description="Prometheus integration.")
    network_policy: NetworkPolicySpec | None = Field(default=None, description="Ingress restrictions.")
    image: ImageSpec | None = Field(default=None, description="Image overrides.")
    pod: PodSpec | None = Field(default=None, description="Pod extras: labels, annotations, env, service account.")

    @model_validator(mode="after")
    def _engine_and_hardware(self) -> Self:
        fmt = self.model.resolved_format()
        if fmt is None and self.engine is None:
            raise ValueError(
                f"model.format cannot be inferred from '{self.model.source}'; set spec.model.format to gguf or onnx"
            )
        if fmt is not None and self.engine is not None and self.engine.model_format is not fmt:
            raise ValueError(
                f"engine '{self.engine.value}' cannot load a {fmt.value} model; {_gguf_hint(fmt)} "
                "(set spec.engine accordingly or omit it)"
            )
        hardware = self.hardware or HardwareSpec()
        explicit_onnx = self.engine is Engine.ONNXRUNTIME_GENAI or self.model.format is ModelFormat.ONNX
        if Accelerator.NPU in hardware.tiers() and not explicit_onnx:
            raise ValueError(
                "hardware: the npu accelerator runs only ONNX models on onnxruntime-genai; set spec.engine: "
                "onnxruntime-genai (or spec.model.format: onnx) or choose another accelerator"
            )
        return self

    @model_validator(mode="after")
    def _cpu_scaling_has_a_request(self) -> Self:
        scaling, resources = self.autoscaling, self.resources
        on_cpu = (
            scaling is not None
            and scaling.enabled
            and (scaling.target_cpu_utilization is not None or scaling.target_inflight_requests is None)
        )
        requests, limits = (resources.requests, resources.limits) if resources else (None, None)
        if on_cpu and requests and "cpu" not in requests and "cpu" not in (limits or {}):
            raise ValueError(CPU_SCALING_NEEDS_REQUEST)
        return self

    def resolved_format(self) -> ModelFormat:
        fmt = self.model.resolved_format()
        if fmt is not None:
            return fmt
        assert self.engine is not None  # guaranteed by _engine_and_hardware
        return self.engine.model_format

    def resolved_engine(self) -> Engine:
        return self.engine or Engine.for_format(self.resolved_format())
