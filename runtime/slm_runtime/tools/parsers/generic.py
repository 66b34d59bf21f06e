"""The fallback for templates with no tool syntax: only the generic JSON shape, at the start of the reply."""

from __future__ import annotations

from slm_runtime.tools.parsers.base import Extracted, ToolCallParser
from slm_runtime.tools.parsers.generic_shape import extract_generic

__all__ = ["GenericParser"]


class GenericParser(ToolCallParser):
    """The shape :func:`slm_runtime.tools.generic.tools_instruction` asks for."""

    family = "generic"

    def extract(self, text: str) -> Extracted | None:
        return extract_generic(text)
