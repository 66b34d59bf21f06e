"""Does a live object already hold everything we would apply? (pure; decides whether to send a PATCH)

Server-side apply is idempotent, but a no-op apply is still a write request. The controller compares first
and applies only when a field it sets is missing or different, so a steady state makes no writes at all.
"""

from __future__ import annotations

import re
from decimal import InvalidOperation
from typing import Any

from slm_operator.api.quantity import QUANTITY_PATTERN, parse_quantity

__all__ = ["contains"]

_QUANTITY = re.compile(QUANTITY_PATTERN)


def _same_scalar(desired: Any, live: Any) -> bool:
    if desired == live and type(desired) is type(live):
        return True
    if isinstance(desired, bool) or isinstance(live, bool):
        return False
    # The apiserver canonicalises quantities ("0.5" -> "500m", 2 -> "2"): compare their values.
    text_desired, text_live = str(desired), str(live)
    if _QUANTITY.match(text_desired) and _QUANTITY.match(text_live):
        try:
            return parse_quantity(text_desired) == parse_quantity(text_live)
        except (ValueError, InvalidOperation):
            return False
    return False


def contains(live: Any, desired: Any) -> bool:
    """True when every field of ``desired`` is present in ``live`` with an equal value.

    Mappings may carry extra keys in ``live`` (defaults, other managers' fields); lists must have the same
    length and each item must contain the desired item (the apiserver keeps list order).
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(item_live, item) for item_live, item in zip(live, desired, strict=True))
        )
    return _same_scalar(desired, live)
