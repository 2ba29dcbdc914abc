"""Standard Webhooks signatures and endpoint secrets.

Signed content is `{webhook-id}.{webhook-timestamp}.{body}`, HMAC-SHA256 keyed
with the base64-decoded part of the `whsec_…` secret; `webhook-signature` is a
space-separated list of `v1,<base64>`. After a rotation the previous secret keeps
signing beside the new one for `ROTATION_OVERLAP`, so a receiver that still has
the old secret verifies every delivery while the new one is rolled out. A rotation
with `expire_previous` (after a leak) drops every old secret at once: from then on
only the new secret signs.

Secrets are stored sealed with the keyring (AES-256-GCM, bound to the endpoint id)
and shown only when created or rotated.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.crypto import Keyring

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
SECRET_BYTES = 32
ROTATION_OVERLAP = timedelta(hours=24)
# Svix keeps at most this many previous keys signing at once.
MAX_OLD_SECRETS = 10


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def message_id(delivery_id: uuid.UUID) -> str:
    """`webhook-id`: the delivery's id, the same on every attempt (receivers dedupe on it)."""
    return f"msg_{delivery_id.hex}"


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signature_header(keys: list[bytes], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(key, msg_id, timestamp, body) for key in keys)


def _context(endpoint_id: uuid.UUID) -> str:
    return f"webhook-secret:{endpoint_id}"


def seal_secret(keyring: Keyring, endpoint_id: uuid.UUID, secret: str) -> str:
    return keyring.seal(secret, _context(endpoint_id))


def open_secret(keyring: Keyring, endpoint_id: uuid.UUID, sealed: str) -> str:
    return keyring.open(sealed, _context(endpoint_id))


@dataclass(frozen=True)
class Rotation:
    secret: str  # shown once to the caller
    sealed: str
    old_secrets: list[dict[str, str]]
    # Until when the secret it replaced keeps signing (`now` when expired at once).
    previous_expires_at: datetime


def rotate(
    keyring: Keyring,
    endpoint_id: uuid.UUID,
    current_sealed: str,
    old_secrets: list[dict[str, str]],
    now: datetime,
    *,
    expire_previous: bool = False,
) -> Rotation:
    """A new secret; the current one joins the old ones, signing until now + 24 h.

    With `expire_previous` the current secret and every old one stop signing now: the
    old secrets list is emptied and the next delivery carries one signature.
    """
    secret = generate_secret()
    sealed = seal_secret(keyring, endpoint_id, secret)
    if expire_previous:
        return Rotation(secret, sealed, [], now)
    expires_at = now + ROTATION_OVERLAP
    live = [entry for entry in old_secrets if datetime.fromisoformat(entry["expiresAt"]) > now]
    live.insert(0, {"secret": current_sealed, "expiresAt": expires_at.isoformat()})
    return Rotation(secret, sealed, live[:MAX_OLD_SECRETS], expires_at)


def signing_keys(
    keyring: Keyring,
    endpoint_id: uuid.UUID,
    current_sealed: str,
    old_secrets: list[dict[str, str]],
    now: datetime,
) -> list[bytes]:
    """The HMAC keys that sign a delivery now: the current secret, then unexpired old ones."""
    keys = [secret_key(open_secret(keyring, endpoint_id, current_sealed))]
    for entry in old_secrets:
        if datetime.fromisoformat(entry["expiresAt"]) > now:
            keys.append(secret_key(open_secret(keyring, endpoint_id, entry["secret"])))
    return keys
