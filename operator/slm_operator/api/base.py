"""The base model every API type derives from: camelCase aliases, unknown fields rejected."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

__all__ = ["ApiModel", "CelRule"]

CelRule = dict[str, str]


class ApiModel(BaseModel):
    """Fields are snake_case in Python and camelCase on the wire; unknown fields are an error.

    ``cel_rules`` are cross-field rules the apiserver enforces through ``x-kubernetes-validations``; each
    one is mirrored by a pydantic validator so `slm validate` and the operator report the same error.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
        use_enum_values=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase form, leaving out fields that were never set and are None."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = handler(core_schema)
        if cls.cel_rules:
            handler.resolve_ref_schema(schema)["x-kubernetes-validations"] = [dict(rule) for rule in cls.cel_rules]
        return schema
