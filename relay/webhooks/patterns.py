"""Event types and the patterns endpoints subscribe with.

A type is dot-separated words (`order.created`, `integration.connected`). An
endpoint subscribes with exact types, `prefix.*` (every type under `prefix.`, at
any depth) or `*` (every type).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

MAX_TYPE_LENGTH = 200
_TYPE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_PATTERN = re.compile(r"^(\*|[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*(\.\*)?)$")


def is_valid_type(event_type: str) -> bool:
    return len(event_type) <= MAX_TYPE_LENGTH and bool(_TYPE.match(event_type))


def is_valid_pattern(pattern: str) -> bool:
    return len(pattern) <= MAX_TYPE_LENGTH and bool(_PATTERN.match(pattern))


def matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


def matches_any(patterns: Iterable[str], event_type: str) -> bool:
    return any(matches(pattern, event_type) for pattern in patterns)
