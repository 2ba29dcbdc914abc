"""Field checks more than one capability's wire schemas share."""

from __future__ import annotations

import json
from typing import Any

METADATA_LIMIT = 16_384


def check_metadata(
    value: dict[str, Any] | None, limit: int = METADATA_LIMIT
) -> dict[str, Any] | None:
    """A `metadata` map of at most `limit` characters of JSON (a pydantic validator's body:
    the ValueError becomes a 422 VALIDATION_ERROR naming the field)."""
    if value is not None and len(json.dumps(value, default=str)) > limit:
        raise ValueError(f"at most {limit} bytes of JSON")
    return value
