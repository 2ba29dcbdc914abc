"""Endpoint rules shared by the API and the dispatcher: custom headers and their storage.

An endpoint's custom headers often carry a credential for the receiver (an
`Authorization` header), so the map is stored sealed with the keyring, bound to
the endpoint id, and the API shows the values of credential-like names masked.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from relay.crypto import Keyring
from relay.webhooks.sender import is_reserved_header

MAX_HEADERS = 20
MAX_HEADER_VALUE = 1000
MASK = "********"
_TOKEN = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$")
_SENSITIVE = re.compile(r"(?i)(authorization|cookie|token|secret|key|password|signature)")


def header_problems(headers: dict[str, str]) -> list[dict[str, str]]:
    """Why a custom header map is refused (an empty list when it is fine)."""
    problems = []
    if len(headers) > MAX_HEADERS:
        problems.append(
            {"field": "headers", "in": "body", "message": f"at most {MAX_HEADERS} headers"}
        )
    for name, value in headers.items():
        field = f"headers.{name}"
        if not _TOKEN.match(name):
            problems.append({"field": field, "in": "body", "message": "not a valid header name"})
        elif is_reserved_header(name):
            problems.append(
                {
                    "field": field,
                    "in": "body",
                    "message": "webhook-*, content-type, user-agent and hop-by-hop headers "
                    "are set by Relay",
                }
            )
        if not isinstance(value, str) or len(value) > MAX_HEADER_VALUE:
            problems.append(
                {"field": field, "in": "body", "message": f"a string of at most {MAX_HEADER_VALUE}"}
            )
        elif any(char in value for char in "\r\n\0"):
            problems.append(
                {"field": field, "in": "body", "message": "must not contain line breaks"}
            )
    return problems


def _context(endpoint_id: uuid.UUID) -> str:
    return f"webhook-headers:{endpoint_id}"


def seal_headers(
    keyring: Keyring, endpoint_id: uuid.UUID, headers: dict[str, str]
) -> dict[str, Any]:
    if not headers:
        return {}
    return {"sealed": keyring.seal(json.dumps(headers), _context(endpoint_id))}


def open_headers(
    keyring: Keyring, endpoint_id: uuid.UUID, stored: dict[str, Any]
) -> dict[str, str]:
    sealed = stored.get("sealed") if stored else None
    if not sealed:
        return {}
    return dict(json.loads(keyring.open(sealed, _context(endpoint_id))))


def masked(headers: dict[str, str]) -> dict[str, str]:
    return {name: MASK if _SENSITIVE.search(name) else value for name, value in headers.items()}
