"""Bounds of spec fields that the runtime checks: taken from the runtime's own settings models.

A spec.parameters field sets one runtime field (``parameter_field``: numThread -> threads); its numeric bounds
(ge/gt/le/lt) are read from that runtime field, so the CRD, `slm validate` and the runtime refuse the same
values and a pod never crash-loops on a value the spec accepted.
"""

from __future__ import annotations

from typing import Any

from slm_runtime.settings import field_info, parameter_field

__all__ = ["runtime_bounds"]

_BOUND_KEYS = ("ge", "gt", "le", "lt")


def runtime_bounds(parameter: str) -> dict[str, Any]:
    """``{"ge": ..., "le": ...}`` of the runtime field that spec.parameters ``parameter`` sets."""
    bounds: dict[str, Any] = {}
    for constraint in field_info(parameter_field(parameter)).metadata:
        for key in _BOUND_KEYS:
            value = getattr(constraint, key, None)
            if value is not None:
                bounds[key] = value
    return bounds
