"""Verification codes: the keyed hashes, the code itself, where codes go, and what crosses
Temporal for the `verification-{id}` workflow.

One key, derived for this purpose only (HKDF-SHA256 over the current encryption key, so
no new secret to configure), makes three things:
- the verification id: HMAC(key, "<email|phone>:<normalized destination>"), so one
  destination has one workflow and its limits count per destination whichever channel
  (SMS or WhatsApp share a number), without the destination ever crossing Temporal;
- the code: six digits from HMAC(key, "<id>:<run>:<code number>"), drawn in the
  activity and reproducible, so a retried activity (or a resend) sends the same code;
- the digest the workflow keeps: HMAC(key, "<id>:<code>"); the API computes it from the
  submitted code, so a code appears in no workflow input, result or history.

Rotating ENCRYPTION_KEYS changes the key: codes in flight at that moment stop checking
(they live ten minutes) and later sends start afresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from relay.crypto import Keyring, load_keyring
from relay.db import utcnow
from relay.models.notifications import Verification
from relay.notifications.contracts import (
    CODE_TTL_SECONDS,
    Channel,
    SuppressionChannel,
    VerificationStatus,
)
from relay.settings import Settings

verifications = Verification.__table__  # type: ignore[attr-defined]

CODE_DIGITS = 6
VERIFICATION_CHANNELS = frozenset({Channel.SMS, Channel.WHATSAPP, Channel.EMAIL})
_HKDF_INFO = b"relay/notifications/verification-codes/v1"

# Deliberately strict (RFC 5321's dot-atom local part, a dotted domain of LDH labels):
# a code sent to a malformed address is a code nobody can use.
_EMAIL = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_EMAIL_MAX = 254


def normalize_email(value: str) -> str:
    """`value` as a lower-cased address, or ValueError (which never repeats the address)."""
    text = value.strip()
    if len(text) > _EMAIL_MAX or not _EMAIL.fullmatch(text) or len(text.split("@")[0]) > 64:
        raise ValueError("not a valid email address")
    return text.lower()


def normalize_phone(value: str) -> str:
    from relay.notifications.phones import to_e164

    return to_e164(value)


def destination_kind(to: str) -> SuppressionChannel:
    """Which kind of destination `to` is: a check names no channel, so an address has '@'."""
    return SuppressionChannel.EMAIL if "@" in to else SuppressionChannel.PHONE


def normalize(channel: Channel, to: str) -> tuple[SuppressionChannel, str]:
    """(kind, normalized destination) for a send on `channel`, or ValueError."""
    if channel is Channel.EMAIL:
        return SuppressionChannel.EMAIL, normalize_email(to)
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return SuppressionChannel.PHONE, normalize_phone(to)
    raise ValueError("verification codes go by sms, whatsapp or email")


def normalize_any(to: str) -> tuple[SuppressionChannel, str]:
    """(kind, normalized destination) for a check, which names no channel; or ValueError."""
    if destination_kind(to) is SuppressionChannel.EMAIL:
        return SuppressionChannel.EMAIL, normalize_email(to)
    return SuppressionChannel.PHONE, normalize_phone(to)


# --- the key -------------------------------------------------------------------------------


def _first_key_secret(spec: str) -> bytes:
    # The spec is already validated by Keyring.parse when the process loaded its keyring.
    first = next(part.strip() for part in spec.split(",") if part.strip())
    return base64.b64decode(first.partition(":")[2], validate=True)


class VerificationKey:
    """The HMAC key of verification codes and ids. Never printed."""

    def __init__(self, secret: bytes) -> None:
        self._secret = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO
        ).derive(secret)

    @classmethod
    def from_settings(cls, settings: Settings) -> VerificationKey:
        """From ENCRYPTION_KEYS' first (encrypting) key, or in development the key
        generated into DATA_DIR (what the process's keyring is loaded from). The keyring
        exposes no key material, so this reads what it was built from."""
        if settings.encryption_keys:
            spec = settings.encryption_keys.get_secret_value()
        else:
            load_keyring(None, settings.dev_keys_file)  # creates the dev key when absent
            spec = settings.dev_keys_file.read_text().strip()
        return cls(_first_key_secret(spec))

    def __repr__(self) -> str:
        return "VerificationKey()"

    def _mac(self, message: str) -> bytes:
        return hmac.new(self._secret, message.encode(), hashlib.sha256).digest()

    def verification_id(self, kind: SuppressionChannel, destination: str) -> str:
        return self._mac(f"{kind.value}:{destination}").hex()

    def code(self, verification_id: str, seed: str, code_number: int) -> str:
        """The code number `code_number` of the run chain `seed`: six digits (the 64-bit
        prefix modulo a million: a bias below 1e-13)."""
        value = int.from_bytes(self._mac(f"{verification_id}:{seed}:{code_number}")[:8], "big")
        return f"{value % 10**CODE_DIGITS:0{CODE_DIGITS}d}"

    def digest(self, verification_id: str, code: str) -> str:
        return self._mac(f"{verification_id}:{code}").hex()


def digests_match(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())


def message_content(channel: Channel, code: str) -> dict[str, str]:
    minutes = CODE_TTL_SECONDS // 60
    text = f"Your verification code is {code}. It expires in {minutes} minutes."
    if channel is Channel.EMAIL:
        return {"subject": "Your verification code", "text": text}
    return {"body": text}


# --- where codes go (the `verifications` table) ------------------------------------------


def _context(verification_id: str) -> str:
    return f"verification:{verification_id}"


def save_destination(
    engine: Engine, keyring: Keyring, verification_id: str, channel: Channel, destination: str
) -> None:
    """Record (or refresh) where `verification_id`'s codes go, sealed."""
    now = utcnow()
    sealed = keyring.seal(destination, _context(verification_id))
    values = {"channel": channel.value, "destination": sealed, "updated_at": now}
    with engine.begin() as connection:
        changed = connection.execute(
            update(verifications).where(verifications.c.id == verification_id).values(**values)
        ).rowcount
    if changed:
        return
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(verifications).values(id=verification_id, created_at=now, **values)
            )
    except IntegrityError:
        # A concurrent request inserted it first: same id, same destination.
        pass


def load_destination(engine: Engine, keyring: Keyring, verification_id: str) -> str | None:
    with engine.connect() as connection:
        sealed = connection.execute(
            select(verifications.c.destination).where(verifications.c.id == verification_id)
        ).scalar_one_or_none()
    if sealed is None:
        return None
    return keyring.open(sealed, _context(verification_id))


# --- what crosses Temporal -----------------------------------------------------------------


@dataclass
class VerificationInput:
    verification_id: str
    # Carried across continue-as-new.
    state: VerificationState | None = None


@dataclass
class SendCodeRequest:
    """The `send` update: a code (the live one again, or a new one) by `channel`."""

    channel: str


@dataclass
class CheckCodeRequest:
    """The `check` update: the digest of the submitted code (never the code)."""

    digest: str


@dataclass
class SendCodeInput:
    verification_id: str
    channel: str
    seed: str  # the first run id of the workflow's chain
    code_number: int
    send_number: int


@dataclass
class SentCode:
    digest: str
    notification_id: str


@dataclass
class VerificationState:
    """The workflow's state. `digest` is the current code's; it stays out of the view."""

    verification_id: str
    status: str = VerificationStatus.EXPIRED.value  # no live code yet
    channel: str | None = None
    digest: str | None = None
    code_number: int = 0
    expires_at: datetime | None = None
    checks_used: int = 0
    send_number: int = 0
    send_times: list[datetime] = field(default_factory=list)
    notification_id: str | None = None
    seed: str | None = None


@dataclass
class VerificationView:
    """A send's answer and the `state` query's: no digest."""

    verification_id: str
    status: str
    channel: str | None
    expires_at: datetime | None
    sends_left: int
    checks_left: int
    new_code: bool = False
    notification_id: str | None = None


@dataclass
class CheckResult:
    valid: bool
    status: str
    checks_left: int
