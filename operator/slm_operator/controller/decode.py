"""Decoding the own watches' JSON (pure): only the fields that compact.py keeps are made Python objects.

A listed pod is about 55 KiB of JSON, most of it its spec (every container's env, probes, volumes) and its
managedFields, none of which the operator keeps; ``json.loads`` builds every dict and string of it and compact.py
drops them again. msgspec decodes into typed structs and skips what a struct does not declare without building it.
The structs here declare what compact.py reads (a superset: its functions still choose what is kept, and
tests/unit/operator/controller/test_decode.py checks that a record made from this decoding equals one made from
``json.loads``): for every kind the top-level apiVersion, kind, spec and status and the metadata fields ``_META``,
labels, annotations and ownerReferences; for a pod, of its spec only ``nodeName``. An owned object's spec is kept
whole and read only when its SLMDeployment is reconciled (the drift comparison): it stays the apiserver's JSON text
(``msgspec.Raw``), which the record's encoding (compact.py) copies as it is.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import msgspec

__all__ = ["Decoded", "decode_event", "decode_list"]

Decoded = dict[str, Any]  # an object as json.loads would give it, less what no record keeps

Spec = TypeVar("Spec")  # what an object's spec decodes to: the raw text (owned objects) or a pod's nodeName
Obj = TypeVar("Obj")


class _Meta(msgspec.Struct, omit_defaults=True):
    name: Any = msgspec.UNSET
    namespace: Any = msgspec.UNSET
    uid: Any = msgspec.UNSET
    generation: Any = msgspec.UNSET
    resourceVersion: Any = msgspec.UNSET  # noqa: N815  (the API's spelling)
    creationTimestamp: Any = msgspec.UNSET  # noqa: N815
    deletionTimestamp: Any = msgspec.UNSET  # noqa: N815
    labels: Any = msgspec.UNSET
    annotations: Any = msgspec.UNSET
    ownerReferences: Any = msgspec.UNSET  # noqa: N815


class _PodSpec(msgspec.Struct, omit_defaults=True):
    nodeName: Any = msgspec.UNSET  # noqa: N815


class _Object(msgspec.Struct, Generic[Spec], omit_defaults=True):
    """An object of a list or watch event (and a watch's ERROR Status: code, message)."""

    apiVersion: Any = msgspec.UNSET  # noqa: N815
    kind: Any = msgspec.UNSET
    metadata: _Meta | msgspec.UnsetType = msgspec.UNSET
    spec: Spec | msgspec.UnsetType = msgspec.UNSET
    status: Any = msgspec.UNSET
    code: Any = msgspec.UNSET
    message: Any = msgspec.UNSET


class _ListMeta(msgspec.Struct, omit_defaults=True, rename={"continue_": "continue"}):
    resourceVersion: Any = msgspec.UNSET  # noqa: N815
    continue_: Any = msgspec.UNSET


class _List(msgspec.Struct, Generic[Obj], omit_defaults=True):
    metadata: _ListMeta = msgspec.field(default_factory=_ListMeta)
    items: list[Obj] | None = None


class _Event(msgspec.Struct, Generic[Obj], omit_defaults=True):
    type: Any = msgspec.UNSET
    object: Obj | msgspec.UnsetType = msgspec.UNSET


# Keyed by "of pods": an owned object's spec stays raw text, a pod's is only its nodeName.
_LISTS: dict[bool, msgspec.json.Decoder[Any]] = {
    False: msgspec.json.Decoder(_List[_Object[msgspec.Raw]]),
    True: msgspec.json.Decoder(_List[_Object[_PodSpec]]),
}
_EVENTS: dict[bool, msgspec.json.Decoder[Any]] = {
    False: msgspec.json.Decoder(_Event[_Object[msgspec.Raw]]),
    True: msgspec.json.Decoder(_Event[_Object[_PodSpec]]),
}


def _builtins(obj: _Object[Any]) -> Decoded:
    spec = obj.spec
    if isinstance(spec, msgspec.Raw):  # to_builtins takes no Raw: put back after
        obj.spec = msgspec.UNSET
    decoded: Decoded = msgspec.to_builtins(obj)
    if isinstance(spec, msgspec.Raw):
        decoded["spec"] = spec
    return decoded


def decode_list(data: bytes, *, pod: bool = False) -> tuple[list[Decoded], str, str]:
    """A page of a list (of pods, with ``pod``): its items, the continue token ("" on the last page) and the list's
    resourceVersion."""
    page = _LISTS[pod].decode(data)
    meta = page.metadata
    items = [_builtins(item) for item in page.items or ()]
    token = meta.continue_ if isinstance(meta.continue_, str) else ""
    version = str(meta.resourceVersion) if meta.resourceVersion is not msgspec.UNSET else ""
    return items, token, version


def decode_event(line: bytes, *, pod: bool = False) -> tuple[str, Decoded]:
    """One line of a watch stream (of pods, with ``pod``): the event's type and its object."""
    event = _EVENTS[pod].decode(line)
    obj = _builtins(event.object) if event.object is not msgspec.UNSET else {}
    return str(event.type), obj
