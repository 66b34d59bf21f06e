"""The model-server Deployment: a model-pull init container, the runtime container, probes and placement."""

from __future__ import annotations

import math
from typing import Any

from slm_operator.api.enums import Accelerator, CacheVolume
from slm_operator.api.quantity import parse_duration_seconds
from slm_operator.api.resource import SLMDeployment
from slm_operator.api.spec import CacheSpec, HardwareSpec, MonitoringSpec, RolloutSpec, ServerSpec
from slm_operator.hardware import HardwareProfile
from slm_operator.render.meta import (
    ACCELERATOR_ANNOTATION,
    MODEL_DIGEST_ANNOTATION,
    common_labels,
    object_meta,
    selector_labels,
    spec_digest,
)
from slm_operator.render.runtime_env import API_KEY_ENV, TERMINATION_LOG, runtime_environment
from slm_operator.render.storage import cache_claim_name
from slm_operator.settings import OperatorSettings
from slm_runtime.source import SourceScheme

__all__ = ["PULL_CONTAINER", "RUNTIME_CONTAINER", "build_deployment", "restricted_container_security"]

RUNTIME_CONTAINER = "runtime"
PULL_CONTAINER = "model-pull"
RUNTIME_UID = 65532
PROBE_PERIOD_SECONDS = 5
# The startup probe asks every second: a model is often ready a second after its container starts, and a pod is
# Ready (Service endpoints, the gateway's held requests) only once this probe has passed. One cheap GET a second
# during start-up; the readiness probe keeps the slower period afterwards.
STARTUP_PROBE_PERIOD_SECONDS = 1
# After a pod is marked for deletion, Services keep sending it new connections until every kube-proxy (and
# ingress) has seen its endpoint go; the runtime only gets SIGTERM, and stops accepting, after this delay.
PRE_STOP_SECONDS = 5
# Time past the drain for the process to exit after its last response.
EXIT_MARGIN_SECONDS = 5


def restricted_container_security() -> dict[str, Any]:
    """A container security context that passes the `restricted` Pod Security Standard."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUNTIME_UID,
        "runAsGroup": RUNTIME_UID,
        "fsGroup": RUNTIME_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _resources(slm: SLMDeployment, profile: HardwareProfile, settings: OperatorSettings) -> dict[str, Any]:
    spec = slm.spec
    requests = dict((spec.resources.requests if spec.resources else None) or settings.default_requests)
    limits = dict((spec.resources.limits if spec.resources else None) or {})
    if profile.resource_name:
        count = str((spec.hardware or HardwareSpec()).count)
        requests[profile.resource_name] = count
        limits[profile.resource_name] = count
    out: dict[str, Any] = {"requests": dict(sorted(requests.items()))}
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    return out


def _cache_volume(slm: SLMDeployment) -> dict[str, Any]:
    cache = slm.spec.cache or CacheSpec()
    if cache.volume is CacheVolume.PERSISTENT_VOLUME_CLAIM:
        return {"name": "model-cache", "persistentVolumeClaim": {"claimName": cache_claim_name(slm)}}
    empty: dict[str, Any] = {"sizeLimit": cache.size} if cache.size else {}
    return {"name": "model-cache", "emptyDir": empty}


def _source_volume(slm: SLMDeployment, settings: OperatorSettings) -> tuple[dict[str, Any], dict[str, Any]] | None:
    source = slm.spec.model.parsed_source
    if source.scheme is not SourceScheme.PVC:
        return None
    volume = {"name": "model-source", "persistentVolumeClaim": {"claimName": source.name, "readOnly": True}}
    mount = {"name": "model-source", "mountPath": f"{settings.pvc_mount_root}/{source.name}", "readOnly": True}
    return volume, mount


def _pull_args(slm: SLMDeployment, settings: OperatorSettings) -> list[str]:
    args = ["pull", slm.spec.model.source, "--dest", settings.cache_mount_path, "--progress", "log"]
    if slm.spec.model.sha256:
        args += ["--sha256", slm.spec.model.sha256]
    if slm.spec.model.parsed_source.scheme is SourceScheme.PVC:
        args += ["--pvc-root", settings.pvc_mount_root]
    # The result JSON (digest, size) becomes the init container's termination message, which the
    # operator reads into status.model; on failure the same file carries the error.
    return [*args, "--output", TERMINATION_LOG, "--termination-log", TERMINATION_LOG]


def _env(slm: SLMDeployment, profile: HardwareProfile, settings: OperatorSettings) -> list[dict[str, Any]]:
    values = runtime_environment(
        slm.spec, profile, cache_dir=settings.cache_mount_path, pvc_root=settings.pvc_mount_root
    )
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in sorted(values.items())]
    server = slm.spec.server or ServerSpec()
    if server.api_key_secret_ref:
        ref = server.api_key_secret_ref
        env.append({"name": API_KEY_ENV, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}})
    for extra in (slm.spec.pod.env if slm.spec.pod else None) or []:
        env.append(extra.to_wire())
    return env


def _probes(port: int, settings: OperatorSettings) -> dict[str, Any]:
    def probe(path: str, **timing: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": "http"}, **timing}

    startup_failures = max(1, settings.startup_timeout_seconds // STARTUP_PROBE_PERIOD_SECONDS)
    return {
        "startupProbe": probe("/readyz", periodSeconds=STARTUP_PROBE_PERIOD_SECONDS, failureThreshold=startup_failures),
        "readinessProbe": probe("/readyz", periodSeconds=PROBE_PERIOD_SECONDS, failureThreshold=2),
        "livenessProbe": probe("/healthz", periodSeconds=10, failureThreshold=3, timeoutSeconds=5),
    }


def _termination_grace_seconds(server: ServerSpec) -> int:
    """The preStop delay, then the runtime's drain of the requests in flight, then its exit."""
    return PRE_STOP_SECONDS + math.ceil(parse_duration_seconds(server.drain_timeout)) + EXIT_MARGIN_SECONDS


def _placement(slm: SLMDeployment, profile: HardwareProfile) -> dict[str, Any]:
    hardware = slm.spec.hardware or HardwareSpec()
    placement: dict[str, Any] = {}
    selector = {**profile.node_selector, **(hardware.node_selector or {})}
    if selector:
        placement["nodeSelector"] = dict(sorted(selector.items()))
    tolerations = [*profile.tolerations, *(t.to_wire() for t in hardware.tolerations or [])]
    if tolerations:
        placement["tolerations"] = tolerations
    if hardware.affinity:
        placement["affinity"] = hardware.affinity
    return placement


def _pod_annotations(slm: SLMDeployment, accelerator: Accelerator, port: int) -> dict[str, str]:
    monitoring = slm.spec.monitoring or MonitoringSpec()
    annotations = dict((slm.spec.pod.annotations if slm.spec.pod else None) or {})
    annotations.update(
        {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(port),
            "prometheus.io/path": "/metrics",
            "prometheus.io/interval": monitoring.interval,
            MODEL_DIGEST_ANNOTATION: spec_digest(slm.spec.model.to_wire()),
            ACCELERATOR_ANNOTATION: accelerator.value,
        }
    )
    return dict(sorted(annotations.items()))


def _pod_spec(
    slm: SLMDeployment, accelerator: Accelerator, profile: HardwareProfile, settings: OperatorSettings
) -> dict[str, Any]:
    spec = slm.spec
    port = (spec.server or ServerSpec()).port
    image = (spec.image.runtime if spec.image else None) or settings.image_for(profile)
    pull_policy = (spec.image.pull_policy if spec.image else None) or settings.image_pull_policy
    mounts = [
        {"name": "model-cache", "mountPath": settings.cache_mount_path},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    volumes = [_cache_volume(slm), {"name": "tmp", "emptyDir": {}}]
    source_volume = _source_volume(slm, settings)
    if source_volume:
        volumes.append(source_volume[0])
        mounts.append(source_volume[1])

    def container(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "image": image,
            "imagePullPolicy": pull_policy,
            "securityContext": restricted_container_security(),
            "volumeMounts": [dict(m) for m in mounts],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }

    pull = {
        **container(PULL_CONTAINER),
        "args": _pull_args(slm, settings),
        "env": [e.to_wire() for e in (spec.pod.env if spec.pod else None) or []],
        "resources": settings.pull_resources,
    }
    runtime = {
        **container(RUNTIME_CONTAINER),
        "args": ["serve"],
        "env": _env(slm, profile, settings),
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "resources": _resources(slm, profile, settings),
        "lifecycle": {"preStop": {"sleep": {"seconds": PRE_STOP_SECONDS}}},
        **_probes(port, settings),
    }
    if not pull["env"]:
        del pull["env"]
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "initContainers": [pull],
        "containers": [runtime],
        "volumes": volumes,
        "terminationGracePeriodSeconds": _termination_grace_seconds(spec.server or ServerSpec()),
        **_placement(slm, profile),
    }
    extras = spec.pod
    if extras and extras.service_account_name:
        pod["serviceAccountName"] = extras.service_account_name
    if extras and extras.priority_class_name:
        pod["priorityClassName"] = extras.priority_class_name
    if extras and extras.image_pull_secrets:
        pod["imagePullSecrets"] = [s.to_wire() for s in extras.image_pull_secrets]
    return pod


def build_deployment(
    slm: SLMDeployment, accelerator: Accelerator, profile: HardwareProfile, settings: OperatorSettings
) -> dict[str, Any]:
    """The apps/v1 Deployment for ``slm`` rendered for one accelerator tier."""
    spec = slm.spec
    rollout = spec.rollout or RolloutSpec()
    pod_labels = {**((spec.pod.labels if spec.pod else None) or {}), **common_labels(slm)}
    deployment_spec: dict[str, Any] = {
        "selector": {"matchLabels": selector_labels(slm)},
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": rollout.max_surge, "maxUnavailable": rollout.max_unavailable},
        },
        "revisionHistoryLimit": 5,
        "template": {
            "metadata": {
                "labels": dict(sorted(pod_labels.items())),
                "annotations": _pod_annotations(slm, accelerator, (spec.server or ServerSpec()).port),
            },
            "spec": _pod_spec(slm, accelerator, profile, settings),
        },
    }
    if not (spec.autoscaling and spec.autoscaling.enabled):
        deployment_spec = {"replicas": spec.replicas, **deployment_spec}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": object_meta(slm), "spec": deployment_spec}
