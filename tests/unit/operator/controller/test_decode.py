"""decode.py: a record made from the typed decoding equals one made from json.loads, for lists and watch events of
pods and owned objects; what no record keeps (managedFields, a pod's spec) is not decoded."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from slm_operator.controller.compact import Kept, keep
from slm_operator.controller.decode import decode_event, decode_list

MANAGED_FIELDS = [
    {"manager": "kubectl", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:x": {}}}}
]


def meta(name: str, version: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "team-a",
        "uid": f"uid-{name}",
        "resourceVersion": version,
        "generation": 3,
        "creationTimestamp": "2026-12-01T10:00:00Z",
        "labels": {"app.kubernetes.io/instance": "assistant", "app.kubernetes.io/managed-by": "slm-operator"},
        "annotations": {"note": "naïve — ünïcode", "slm-operator.io/accelerator": "cpu"},
        "ownerReferences": [{"apiVersion": "slm-operator.io/v1alpha1", "kind": "SLMDeployment", "name": "assistant"}],
        "managedFields": MANAGED_FIELDS,
        "finalizers": ["x"],
    }


def deployment(version: str = "7") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta("assistant", version),
        "spec": {
            "replicas": 2,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "resources": {"requests": {"cpu": "500m"}, "limits": {"memory": 1.5}},
                            "env": [{"name": "A", "value": "é"}],
                        }
                    ]
                }
            },
        },
        "status": {"replicas": 2, "readyReplicas": 1, "observedGeneration": 3, "conditions": [{"type": "x"}]},
    }


def pod(version: str = "9") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("assistant-abc-xyz", version),
        "spec": {"nodeName": "node-1", "containers": [{"name": "server", "image": "runtime:1"}]},
        "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            "containerStatuses": [{"name": "server", "ready": False, "restartCount": 2, "image": "runtime:1"}],
        },
    }


def fields(kept: Kept) -> tuple[Any, ...]:
    return (kept.name, kept.version, kept.created, kept.unschedulable, kept.body())


def listed(body: dict[str, Any]) -> dict[str, Any]:
    """An item as a list carries it: without apiVersion and kind (the watcher puts them back)."""
    return {k: v for k, v in body.items() if k not in ("apiVersion", "kind")}


@pytest.mark.parametrize(("body", "is_pod"), [(deployment(), False), (pod(), True)])
def test_a_list_page_gives_the_records_that_json_loads_gives(body: dict[str, Any], is_pod: bool) -> None:
    page = {"kind": "List", "metadata": {"resourceVersion": "42", "continue": "next"}, "items": [listed(body)]}
    items, token, version = decode_list(json.dumps(page).encode(), pod=is_pod)
    assert (token, version) == ("next", "42")
    expected = json.loads(json.dumps(page))["items"]
    for got, want in zip(items, expected, strict=True):
        assert "managedFields" not in got["metadata"]
        assert fields(keep(got, pod=is_pod)) == fields(keep(want, pod=is_pod))
    if is_pod:
        assert items[0]["spec"] == {"nodeName": "node-1"}  # the containers were skipped
    else:
        assert isinstance(items[0]["spec"], msgspec.Raw)  # kept as the apiserver's text


def test_the_last_page_has_no_continue_token() -> None:
    assert decode_list(b'{"metadata":{"resourceVersion":"5"},"items":[]}') == ([], "", "5")
    assert decode_list(b'{"metadata":{},"items":null}', pod=True) == ([], "", "")


@pytest.mark.parametrize(("body", "is_pod"), [(deployment("8"), False), (pod("10"), True)])
def test_a_watch_event_gives_the_record_that_json_loads_gives(body: dict[str, Any], is_pod: bool) -> None:
    line = json.dumps({"type": "MODIFIED", "object": body}).encode()
    kind, obj = decode_event(line, pod=is_pod)
    assert kind == "MODIFIED"
    assert fields(keep(obj, pod=is_pod)) == fields(keep(json.loads(line)["object"], pod=is_pod))


def test_bookmarks_and_errors_keep_what_the_watcher_reads() -> None:
    kind, obj = decode_event(b'{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"77"}}}')
    assert (kind, obj["metadata"]["resourceVersion"]) == ("BOOKMARK", "77")
    status = {"kind": "Status", "status": "Failure", "message": "too old", "reason": "Expired", "code": 410}
    kind, obj = decode_event(json.dumps({"type": "ERROR", "object": status}).encode(), pod=True)
    assert (kind, obj["code"], obj["message"]) == ("ERROR", 410, "too old")


def test_a_broken_line_is_a_value_error() -> None:
    with pytest.raises(ValueError):  # the watcher lists again after a ValueError
        decode_event(b'{"type":"ADDED","object":{"metadata":')
