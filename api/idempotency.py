"""A reused idempotencyKey must ask for the same thing.

An entity created with an idempotencyKey is found again by that key (its id is derived
from it), so a retry lands on it. A different request under the same key is a client bug
that would otherwise be answered silently with the first request's entity; Stripe answers
it with an error, and so does Relay: 409 CONFLICT naming the fields that differ. The check
runs on what the entity's workflow answered, so two different requests racing on one key
are caught as well.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from relay.errors import ErrorCode, RelayError


def uuid_for(namespace: uuid.UUID, idempotency_key: str | None) -> str:
    """An entity's id: derived from the client's key (UUIDv5 in the entity kind's
    namespace), so a retried request lands on the same workflow; random without one."""
    if idempotency_key:
        return str(uuid.uuid5(namespace, idempotency_key))
    return str(uuid.uuid4())


def require_same_request(compared: Mapping[str, tuple[object, object]]) -> None:
    """`compared` maps a body field's name to (what this request asks, what the entity
    holds); raise 409 when any differs."""
    differing = sorted(name for name, (asked, held) in compared.items() if asked != held)
    if differing:
        raise RelayError(
            ErrorCode.CONFLICT,
            "this idempotencyKey was used for a different request",
            [
                {"field": name, "in": "body", "message": "differs from the first request"}
                for name in ["idempotencyKey", *differing]
            ],
        )
