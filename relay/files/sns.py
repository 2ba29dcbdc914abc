"""Amazon SNS messages as they reach `POST /webhooks/s3`: parsing, signature verification,
subscription confirmation.

S3 event notifications reach HTTP through an SNS topic, so what arrives is an SNS message
(a JSON body) whose `Signature` is RSA over SNS's canonical string of the message, made
with the key of the certificate at `SigningCertURL`:

- SignatureVersion 1 is SHA1withRSA, 2 is SHA256withRSA (PKCS #1 v1.5);
- the canonical string is `Name\\nValue\\n` for each signed field, in this order:
  Notification: Message, MessageId, Subject (when present), Timestamp, TopicArn, Type;
  SubscriptionConfirmation and UnsubscribeConfirmation: Message, MessageId, SubscribeURL,
  Timestamp, Token, TopicArn, Type;
- the certificate is fetched only from `https://sns.<region>.amazonaws.com[.cn]/….pem`
  (anyone can host a certificate elsewhere and sign what they like), and cached by URL.

The one exception to that host rule is the S3 sandbox (relay/sandbox/s3.py), which plays
SNS with a key of its own: S3_EVENTS_SANDBOX_CERTIFICATE pins its certificate, and a
message whose SigningCertURL is on loopback is verified with that certificate, never with
one fetched, and only outside production with the sandbox in use (SANDBOX not `off`,
S3_ENDPOINT_URL on loopback). Such a message's loopback SubscribeURL is confirmed too.
Production refuses to start with the setting (Settings.production_problems); a deployment
against real S3, or without the setting, accepts no loopback URL at all.

Every refusal is `RelayError(INVALID_SIGNATURE)` and names no secret (the subscription
token and the URL carrying it never reach a message or a log).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import json
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import SplitResult, urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from relay.errors import ErrorCode, RelayError
from relay.settings import Settings

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS[UNSUBSCRIBE_CONFIRMATION] = _SIGNED_FIELDS[SUBSCRIPTION_CONFIRMATION]
# Subject is the only optional signed field (a Notification may have none).
_OPTIONAL = frozenset({"Subject"})
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# AWS's documented pattern for SNS's own hosts (aws-sdk's SNS message validators use it).
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]{3,}\.amazonaws\.com(\.cn)?$")

# SNS bodies are a few KB; S3 events batch at most a few records.
MAX_BODY_BYTES = 256 * 1024
MAX_CERTIFICATE_BYTES = 64 * 1024
CERTIFICATE_CACHE_SIZE = 32
FETCH_TIMEOUT = httpx.Timeout(10.0)


def _refuse(message: str) -> RelayError:
    return RelayError(ErrorCode.INVALID_SIGNATURE, message)


@dataclass(frozen=True)
class SnsMessage:
    """A parsed SNS message: its type, topic, and every field as SNS sent it."""

    type: str
    topic_arn: str
    fields: dict[str, str]

    @property
    def message(self) -> str:
        return self.fields.get("Message", "")

    @property
    def message_id(self) -> str:
        return self.fields.get("MessageId", "")

    @property
    def subscribe_url(self) -> str:
        return self.fields.get("SubscribeURL", "")


def parse(body: bytes) -> SnsMessage:
    """The SNS message in `body`; INVALID_SIGNATURE when it is not one (nothing is read
    from it before it verifies but its shape)."""
    if len(body) > MAX_BODY_BYTES:
        raise _refuse("the body is not an SNS message")
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise _refuse("the body is not an SNS message")
    kind = data.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise _refuse("the body is not an SNS message of a known Type")
    fields = {key: value for key, value in data.items() if isinstance(value, str)}
    for name in (*_SIGNED_FIELDS[kind], "Signature", "SignatureVersion", "SigningCertURL"):
        if name not in fields and name not in _OPTIONAL:
            raise _refuse(f"the SNS message has no {name}")
    return SnsMessage(type=kind, topic_arn=fields["TopicArn"], fields=fields)


def canonical_string(message: SnsMessage) -> bytes:
    """What SNS signs: `Name\\nValue\\n` for each signed field present, in SNS's order."""
    parts: list[str] = []
    for name in _SIGNED_FIELDS[message.type]:
        if name in message.fields:
            parts.append(f"{name}\n{message.fields[name]}\n")
    return "".join(parts).encode("utf-8")


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def sandbox_in_use(settings: Settings) -> bool:
    """Outside production, with the S3 sandbox on loopback (SANDBOX not `off`)."""
    if settings.is_production or settings.sandbox == "off" or not settings.s3_endpoint_url:
        return False
    host = urlsplit(settings.s3_endpoint_url).hostname
    return host is not None and _loopback(host)


@lru_cache(maxsize=4)
def _load_pinned(value: str) -> x509.Certificate:
    text = value.strip()
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            text = ""
    try:
        return x509.load_pem_x509_certificate(text.encode("ascii"))
    except ValueError:
        # A configuration mistake, said without the value (it is a certificate, but still).
        raise _refuse("S3_EVENTS_SANDBOX_CERTIFICATE is not a PEM certificate") from None


def sandbox_certificate(settings: Settings) -> x509.Certificate | None:
    """The S3 sandbox's signing certificate Relay trusts, when it trusts one: the setting
    is there, outside production, with the sandbox in use."""
    pinned = settings.s3_events_sandbox_certificate
    if not pinned or not sandbox_in_use(settings):
        return None
    return _load_pinned(pinned)


def _parts(url: str) -> SplitResult | None:
    """`url` split, or None when it is malformed or carries credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    return None if parts.username or parts.password else parts


def _sandbox_url(url: str, settings: Settings) -> bool:
    """A loopback http(s) URL, with the sandbox's certificate trusted."""
    parts = _parts(url)
    return (
        parts is not None
        and parts.scheme in ("http", "https")
        and _loopback((parts.hostname or "").lower())
        and sandbox_certificate(settings) is not None
    )


def trusted_sns_url(url: str, settings: Settings, *, certificate: bool) -> bool:
    """An https URL on SNS's own host (`sns.<region>.amazonaws.com[.cn]`), a `.pem` path for
    a certificate; or a loopback URL while the sandbox's certificate is trusted."""
    parts = _parts(url)
    if parts is None:
        return False
    if _sandbox_url(url, settings):
        return True
    if parts.scheme != "https" or not _SNS_HOST.match((parts.hostname or "").lower()):
        return False
    return not certificate or parts.path.endswith(".pem")


class CertificateCache:
    """SNS signing certificates by URL, fetched once each (SNS rotates them by URL).
    `transport` is httpx's (tests hand one answering for SNS's hosts)."""

    def __init__(
        self,
        size: int = CERTIFICATE_CACHE_SIZE,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._size = size
        self._transport = transport
        self._certificates: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = asyncio.Lock()

    async def get(self, url: str) -> x509.Certificate:
        certificate = self._certificates.get(url)
        if certificate is not None:
            self._certificates.move_to_end(url)
            return certificate
        async with self._lock:
            certificate = self._certificates.get(url)
            if certificate is None:
                certificate = await _fetch_certificate(url, self._transport)
                self._certificates[url] = certificate
                while len(self._certificates) > self._size:
                    self._certificates.popitem(last=False)
            return certificate


async def _fetch_certificate(
    url: str, transport: httpx.AsyncBaseTransport | None = None
) -> x509.Certificate:
    try:
        async with httpx.AsyncClient(
            timeout=FETCH_TIMEOUT, follow_redirects=False, transport=transport
        ) as http:
            async with http.stream("GET", url) as answer:
                if answer.status_code != 200:
                    raise _refuse("the SNS signing certificate could not be fetched")
                data = b""
                async for chunk in answer.aiter_bytes():
                    data += chunk
                    if len(data) > MAX_CERTIFICATE_BYTES:
                        raise _refuse("the SNS signing certificate is not a certificate")
    except httpx.HTTPError:
        raise _refuse("the SNS signing certificate could not be fetched") from None
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        raise _refuse("the SNS signing certificate is not a certificate") from None


async def verify(message: SnsMessage, settings: Settings, certificates: CertificateCache) -> None:
    """The message's topic is allowed (S3_EVENTS_TOPIC_ARNS) and its signature verifies;
    INVALID_SIGNATURE otherwise. The topic is checked first: a message from another topic
    makes Relay fetch nothing."""
    if message.topic_arn not in settings.s3_events_topic_arns:
        raise _refuse("the SNS topic is not in S3_EVENTS_TOPIC_ARNS")
    algorithm = _HASHES.get(message.fields["SignatureVersion"])
    if algorithm is None:
        raise _refuse("unknown SNS SignatureVersion")
    url = message.fields["SigningCertURL"]
    if not trusted_sns_url(url, settings, certificate=True):
        raise _refuse("the SNS SigningCertURL is not on an SNS host")
    try:
        signature = base64.b64decode(message.fields["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise _refuse("the SNS signature does not verify") from None
    # The sandbox's messages verify with the pinned certificate: a loopback URL is never
    # fetched (whatever listens there is not trusted, only the key Relay was given).
    pinned = sandbox_certificate(settings) if _sandbox_url(url, settings) else None
    certificate = pinned if pinned is not None else await certificates.get(url)
    now = datetime.now(UTC)
    if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
        raise _refuse("the SNS signing certificate is not valid now")
    key = certificate.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise _refuse("the SNS signing certificate has no RSA key")
    try:
        key.verify(signature, canonical_string(message), padding.PKCS1v15(), algorithm())
    except InvalidSignature:
        raise _refuse("the SNS signature does not verify") from None


async def confirm_subscription(message: SnsMessage, settings: Settings) -> None:
    """GET the SubscribeURL of a verified SubscriptionConfirmation (SNS's own host only).
    PROVIDER_ERROR when SNS does not take it (SNS sends the confirmation again)."""
    url = message.subscribe_url
    # A loopback SubscribeURL only in a message the sandbox's certificate verified.
    from_sandbox = _sandbox_url(message.fields.get("SigningCertURL", ""), settings)
    if _sandbox_url(url, settings) and not from_sandbox:
        raise _refuse("the SubscribeURL is not on an SNS host")
    if not trusted_sns_url(url, settings, certificate=False):
        raise _refuse("the SubscribeURL is not on an SNS host")
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as http:
            answer = await http.get(url)
    except httpx.HTTPError as exc:
        # The URL carries the subscription's token: never in the message.
        raise RelayError(
            ErrorCode.PROVIDER_ERROR,
            f"SNS could not be reached to confirm the subscription ({type(exc).__name__})",
            {"retryable": True},
        ) from None
    if answer.status_code != 200:
        raise RelayError(
            ErrorCode.PROVIDER_ERROR,
            f"SNS refused the subscription confirmation (HTTP {answer.status_code})",
            {"retryable": answer.status_code >= 500},
        )
