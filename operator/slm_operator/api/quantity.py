"""Kubernetes resource quantities and Go-style durations, validated the way the apiserver parses them."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Annotated

from pydantic import AfterValidator, BeforeValidator, Field

__all__ = [
    "DURATION_PATTERN",
    "NON_NEGATIVE_QUANTITY_PATTERN",
    "QUANTITY_PATTERN",
    "Duration",
    "Quantity",
    "parse_duration_seconds",
    "parse_quantity",
]

# The pattern Kubernetes publishes for resource.Quantity in its OpenAPI document.
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"

_QUANTITY = re.compile(QUANTITY_PATTERN)
_DURATION = re.compile(DURATION_PATTERN)
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_SUFFIX = {
    "": Decimal(1), "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(2**10), "Mi": Decimal(2**20), "Gi": Decimal(2**30), "Ti": Decimal(2**40),
    "Pi": Decimal(2**50), "Ei": Decimal(2**60),
}  # fmt: skip
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_quantity(text: str) -> Decimal:
    """The numeric value of a Kubernetes quantity ('500m' -> 0.5, '4Gi' -> 4294967296)."""
    if not _QUANTITY.match(text):
        raise ValueError(
            f"'{text}' is not a Kubernetes quantity; write a number with an optional suffix such as "
            "500m, 2, 512Mi, 4Gi or 1e3"
        )
    match = re.match(r"^([+-]?[0-9.]+)(.*)$", text)
    assert match is not None
    number, suffix = match.groups()
    try:
        if suffix[:1] in ("e", "E"):
            return Decimal(number + suffix)
        return Decimal(number) * _SUFFIX[suffix]
    except (InvalidOperation, KeyError) as exc:  # pragma: no cover - the pattern rules these out
        raise ValueError(f"'{text}' is not a Kubernetes quantity") from exc


def parse_duration_seconds(text: str) -> float:
    """Seconds in a Go-style duration ('120s', '2m', '1h30m', '250ms')."""
    if not _DURATION.match(text):
        raise ValueError(f"'{text}' is not a duration; write a number with a unit ms, s, m or h, e.g. 120s or 2m30s")
    return sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text))


def _quantity_text(value: object) -> object:
    # YAML turns `cpu: 2` into an int; Kubernetes accepts both, so normalise numbers to text.
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return str(value)
    return value


def _check_quantity(text: str) -> str:
    if parse_quantity(text) < 0:
        raise ValueError(f"'{text}' is negative; resource quantities are 0 or more, e.g. 500m, 2 or 4Gi")
    return text


def _check_duration(text: str) -> str:
    parse_duration_seconds(text)
    return text


# Resource amounts and sizes: the apiserver refuses negative ones in a pod spec, so the CRD does too.
NON_NEGATIVE_QUANTITY_PATTERN = QUANTITY_PATTERN.replace(r"^(\+|-)?", r"^\+?", 1)
Quantity = Annotated[
    str,
    BeforeValidator(_quantity_text),
    AfterValidator(_check_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": NON_NEGATIVE_QUANTITY_PATTERN}),
]
Duration = Annotated[str, AfterValidator(_check_duration), Field(json_schema_extra={"pattern": DURATION_PATTERN})]
