"""Secrets and signatures, checked with the standardwebhooks library, unmodified."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from relay.crypto import Keyring
from relay.webhooks.signing import (
    MAX_OLD_SECRETS,
    generate_secret,
    message_id,
    rotate,
    seal_secret,
    secret_key,
    signature_header,
    signing_keys,
)


def test_secret_format() -> None:
    secret = generate_secret()
    assert secret.startswith("whsec_")
    assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64
    assert generate_secret() != secret


def test_signature_verifies_with_standardwebhooks() -> None:
    secret = generate_secret()
    msg_id = message_id(uuid.uuid4())
    now = int(datetime.now(UTC).timestamp())
    body = b'{"type":"order.created","timestamp":"2026-01-01T00:00:00+00:00","data":{}}'
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(now),
        "webhook-signature": signature_header([secret_key(secret)], msg_id, now, body),
    }
    assert Webhook(secret).verify(body, headers)["type"] == "order.created"
    # Tampering with the body, the id or the timestamp fails.
    for changed in [
        (body + b" ", headers),
        (body, headers | {"webhook-id": "msg_other"}),
        (body, headers | {"webhook-timestamp": str(now - 1)}),
    ]:
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(*changed)
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


def test_rotation_keeps_the_old_secret_for_24_hours(keyring: Keyring) -> None:
    endpoint_id = uuid.uuid4()
    first = generate_secret()
    sealed = seal_secret(keyring, endpoint_id, first)
    now = datetime.now(UTC)
    rotation = rotate(keyring, endpoint_id, sealed, [], now)
    keys = signing_keys(keyring, endpoint_id, rotation.sealed, rotation.old_secrets, now)
    assert keys == [secret_key(rotation.secret), secret_key(first)]

    msg_id, ts, body = "msg_1", int(now.timestamp()), b"{}"
    header = signature_header(keys, msg_id, ts, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(first).verify(body, headers)
    Webhook(rotation.secret).verify(body, headers)

    later = now + timedelta(hours=24, seconds=1)
    assert signing_keys(keyring, endpoint_id, rotation.sealed, rotation.old_secrets, later) == [
        secret_key(rotation.secret)
    ]


def test_secrets_are_bound_to_their_endpoint(keyring: Keyring) -> None:
    sealed = seal_secret(keyring, uuid.uuid4(), generate_secret())
    assert "whsec_" not in sealed
    with pytest.raises(Exception):  # noqa: B017 - DecryptionError: wrong endpoint context
        signing_keys(keyring, uuid.uuid4(), sealed, [], datetime.now(UTC))


def test_at_most_ten_old_secrets(keyring: Keyring) -> None:
    endpoint_id = uuid.uuid4()
    sealed = seal_secret(keyring, endpoint_id, generate_secret())
    old: list[dict[str, str]] = []
    now = datetime.now(UTC)
    for _ in range(15):
        rotation = rotate(keyring, endpoint_id, sealed, old, now)
        sealed, old = rotation.sealed, rotation.old_secrets
    assert len(old) == MAX_OLD_SECRETS


def test_expire_previous_leaves_only_the_new_secret_signing(keyring: Keyring) -> None:
    endpoint_id = uuid.uuid4()
    first = generate_secret()
    now = datetime.now(UTC)
    kept = rotate(keyring, endpoint_id, seal_secret(keyring, endpoint_id, first), [], now)
    assert kept.previous_expires_at == now + timedelta(hours=24)
    expired = rotate(keyring, endpoint_id, kept.sealed, kept.old_secrets, now, expire_previous=True)
    assert expired.old_secrets == [] and expired.previous_expires_at == now
    keys = signing_keys(keyring, endpoint_id, expired.sealed, expired.old_secrets, now)
    assert keys == [secret_key(expired.secret)]

    msg_id, ts, body = "msg_1", int(now.timestamp()), b"{}"
    header = signature_header(keys, msg_id, ts, body)
    headers = {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(expired.secret).verify(body, headers)
    for leaked in (first, kept.secret):
        with pytest.raises(WebhookVerificationError):
            Webhook(leaked).verify(body, headers)
