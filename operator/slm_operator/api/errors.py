"""Turning manifests into validated SLMDeployments, with errors that name the field and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from slm_operator.api.resource import API_VERSION, KIND, SLMDeployment

__all__ = ["FieldError", "ManifestError", "format_location", "load_manifest", "validate_manifest"]


@dataclass(frozen=True)
class FieldError:
    """One problem in a manifest: where it is (`spec.hardware.fallback[1]`) and what to do about it."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ManifestError(ValueError):
    """A manifest that is not a valid SLMDeployment; `errors` lists every problem found."""

    def __init__(self, errors: Sequence[FieldError], source: str = "") -> None:
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        super().__init__(prefix + "; ".join(str(e) for e in self.errors))


def format_location(loc: Sequence[int | str]) -> str:
    """('spec', 'hardware', 'fallback', 1) -> 'spec.hardware.fallback[1]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


@cache
def _known_fields() -> tuple[str, ...]:
    names: set[str] = set()

    def walk(model: type[BaseModel]) -> None:
        for name, field in model.model_fields.items():
            names.add(field.alias or name)
            for arg in _model_args(field.annotation):
                if arg.__name__ not in seen:
                    seen.add(arg.__name__)
                    walk(arg)

    seen: set[str] = set()
    walk(SLMDeployment)
    return tuple(sorted(names))


def _model_args(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        yield from _model_args(arg)


def _choices(expected: str) -> str:
    return expected.replace("'", "").replace(" or ", ", ")


def _message(error: dict[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    loc = error["loc"]
    if kind in ("enum", "literal_error"):
        return f"'{value}' is not one of {_choices(str(ctx.get('expected', '')))}"
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else ""
        close = difflib.get_close_matches(name, _known_fields(), n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else "; remove it (see docs/api.md for the fields)"
        return f"unknown field '{name}'{hint}"
    if kind == "missing":
        return "required field is missing; add it"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "assertion_error":
        return str(error["msg"]).removeprefix("Assertion failed, ")
    if kind == "string_pattern_mismatch":
        return f"'{value}' does not match the pattern {ctx.get('pattern')}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return f"{value} is out of range: {error['msg'].lower()}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        return f"{error['msg']} (got {type(value).__name__} {value!r})"
    return str(error["msg"])


def _field_errors(exc: ValidationError) -> list[FieldError]:
    return [FieldError(format_location(e["loc"]), _message(dict(e))) for e in exc.errors(include_url=False)]


def validate_manifest(document: Any, source: str = "") -> SLMDeployment:
    """Validate one parsed YAML/JSON document; raise ManifestError listing every problem."""
    if not isinstance(document, dict):
        raise ManifestError([FieldError("", "the document is not a mapping; expected an SLMDeployment object")], source)
    if document.get("kind") not in (None, KIND) or document.get("apiVersion") not in (None, API_VERSION):
        found = f"{document.get('apiVersion')}/{document.get('kind')}"
        raise ManifestError(
            [FieldError("kind", f"expected apiVersion {API_VERSION} and kind {KIND}, found {found}")], source
        )
    try:
        return SLMDeployment.model_validate(document)
    except ValidationError as exc:
        raise ManifestError(_field_errors(exc), source) from None


def load_manifest(path: Path) -> list[SLMDeployment]:
    """Every SLMDeployment in a (multi-document) YAML file; ManifestError names the document and field."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    except yaml.YAMLError as exc:
        raise ManifestError([FieldError("", f"not valid YAML: {exc}")], str(path)) from None
    if not documents:
        raise ManifestError([FieldError("", "the file holds no document")], str(path))
    results: list[SLMDeployment] = []
    errors: list[FieldError] = []
    for index, document in enumerate(documents):
        prefix = f"(document {index + 1}) " if len(documents) > 1 else ""
        try:
            results.append(validate_manifest(document))
        except ManifestError as exc:
            errors.extend(FieldError(prefix + e.path, e.message) for e in exc.errors)
    if errors:
        raise ManifestError(errors, str(path))
    return results
