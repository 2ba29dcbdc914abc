"""Amazon SNS as the S3 sandbox plays it: signing as SNS signs (also for the tests), and
topics with HTTP(S) subscriptions that get SNS's confirmation handshake and signed
notifications.

SNS signs each message it POSTs to an HTTP(S) subscription with the key of the certificate
at its `SigningCertURL`: RSA PKCS #1 v1.5 over its documented canonical string
(`Name\\nValue\\n` for each signed field in a fixed order), SHA1 for SignatureVersion 1 and
SHA256 for 2. `SigningKey` is such a key with a self-signed certificate; `SnsSigner` makes
SNS's Notification and SubscriptionConfirmation messages with it for a topic, given where
its certificate and its SubscribeURL live.

The canonical string is written here from SNS's documentation, not taken from Relay's
verifier (`relay.files.sns`): the sandbox and the tests stand for SNS, and sharing the code
would let one mistake hide in both.

`SnsTopics` is the sandbox's SNS (topics, subscriptions, the SubscriptionConfirmation sent
again until the endpoint GETs its SubscribeURL, notifications held until then and POSTed
with retries) and `SnsApi` the WSGI middleware answering boto3's SNS client (CreateTopic,
Subscribe, Unsubscribe), the SubscribeURL / UnsubscribeURL GETs and the certificate, in
front of the S3 sandbox (relay/sandbox/s3.py, which publishes S3's events to it).

Relay trusts a sandbox certificate only as S3_EVENTS_SANDBOX_CERTIFICATE (docs/files.md),
which `relay dev` sets from `certificate_pem`. The private key stays in its file (or in
memory) and is never on a command line or in a log.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from relay.errors import ConfigError
from relay.sandbox.server import Delivery, Poster

logger = logging.getLogger(__name__)

# SNS's documented order of the signed fields, per message type.
NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)
# moto's account (it owns every bucket the S3 sandbox makes); the sandbox's topics live in it.
SANDBOX_ACCOUNT_ID = "123456789012"
# A SubscriptionConfirmation is sent again after each of these (the last repeats) until the
# endpoint confirms, or CONFIRMATION_ATTEMPTS were made (`relay dev` starts the API after
# the sandbox: the first attempts find nobody).
CONFIRMATION_DELAYS: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 5.0, 10.0)
CONFIRMATION_ATTEMPTS = 120
# Each notification: tried at once and after these (SNS: three retries by default).
NOTIFICATION_DELAYS: tuple[float, ...] = (0.0, 1.0, 2.0, 4.0)
SNS_TIMEOUT_SECONDS = 5.0
_SNS_XMLNS = "http://sns.amazonaws.com/doc/2010-03-31/"
CERTIFICATE_DAYS = 3650
# Renewed this long before it expires, so a kept key file never signs with a dying cert.
RENEW_BEFORE = timedelta(days=30)


def sns_timestamp(now: datetime | None = None) -> str:
    """SNS's Timestamp: ISO 8601, UTC, milliseconds (`2026-11-26T22:58:01.123Z`)."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _certificate(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=CERTIFICATE_DAYS))
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class SigningKey:
    """An RSA key and its self-signed certificate, as SNS's signing certificate."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, _certificate(key))

    @property
    def certificate_pem(self) -> str:
        return self.certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    def file_contents(self) -> bytes:
        """The private key and the certificate, PEM, one after the other."""
        private = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return private + self.certificate_pem.encode("ascii")

    def write(self, path: Path) -> None:
        """Into `path`, readable by its owner only (it holds the private key)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(self.file_contents())

    @classmethod
    def load(cls, path: Path) -> SigningKey:
        data = path.read_bytes()
        try:
            key = serialization.load_pem_private_key(data, password=None)
            certificate = x509.load_pem_x509_certificate(data)
        except ValueError:
            raise ConfigError(f"{path} holds no SNS signing key and certificate") from None
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ConfigError(f"{path} holds no RSA private key")
        return cls(key, certificate)

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        """The key kept in `path`, made (and kept) when absent or its certificate is near
        its end, so a restarted sandbox signs with the certificate Relay was given."""
        if path.is_file():
            kept = cls.load(path)
            if kept.certificate.not_valid_after_utc - RENEW_BEFORE > datetime.now(UTC):
                return kept
        made = cls.generate()
        made.write(path)
        return made

    def sign(self, message: dict[str, str], version: str = "2") -> dict[str, str]:
        """`message` (with its SigningCertURL) with SignatureVersion and Signature added."""
        signed = {**message, "SignatureVersion": version}
        order = NOTIFICATION_FIELDS if signed["Type"] == "Notification" else CONFIRMATION_FIELDS
        canonical = "".join(f"{name}\n{signed[name]}\n" for name in order if name in signed)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signature = self.key.sign(canonical.encode("utf-8"), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode("ascii")
        return signed


@dataclass(frozen=True)
class SnsSigner:
    """SNS's messages for one place serving SNS: `base` is its URL (where the certificate,
    `cert_url`, and the SubscribeURL / UnsubscribeURL GETs are answered)."""

    key: SigningKey
    base: str
    cert_name: str = "SimpleNotificationService-relay-sandbox.pem"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/{self.cert_name}"

    def sign(self, message: dict[str, Any], version: str = "2") -> dict[str, str]:
        """`message` as SNS sends it: SigningCertURL (unless given), SignatureVersion and
        Signature added."""
        fields = {name: str(value) for name, value in message.items()}
        fields.setdefault("SigningCertURL", self.cert_url)
        return self.key.sign(fields, version)

    def notification(
        self,
        topic: str,
        message: str,
        *,
        subject: str | None = "Amazon S3 Notification",
        subscription_arn: str = "",
        message_id: str | None = None,
        version: str = "2",
    ) -> dict[str, str]:
        fields = {
            "Type": "Notification",
            "MessageId": message_id or str(uuid.uuid4()),
            "TopicArn": topic,
            "Message": message,
            "Timestamp": sns_timestamp(),
            "UnsubscribeURL": f"{self.base}/?Action=Unsubscribe&SubscriptionArn={subscription_arn}",
        }
        if subject is not None:
            fields["Subject"] = subject
        return self.sign(fields, version)

    def records_notification(
        self, topic: str, records: list[dict[str, Any]], *, version: str = "2"
    ) -> dict[str, str]:
        """An S3 event notification: `{"Records": records}` as the Message."""
        return self.notification(topic, json.dumps({"Records": records}), version=version)

    def confirmation(self, topic: str, token: str) -> dict[str, str]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": topic,
                "Message": (
                    f"You have chosen to subscribe to the topic {topic}.\n"
                    "To confirm the subscription, visit the SubscribeURL included in this "
                    "message."
                ),
                "SubscribeURL": (
                    f"{self.base}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}"
                ),
                "Timestamp": sns_timestamp(),
            }
        )


# --- the sandbox's SNS ------------------------------------------------------------------


@dataclass
class _Subscription:
    arn: str
    topic_arn: str
    endpoint: str
    token: str
    confirmed: bool = False
    # Notifications published before the endpoint confirmed: sent once it does.
    held: list[dict[str, str]] = field(default_factory=list)


class SnsTopics:
    """The sandbox's SNS: topics, their HTTP(S) subscriptions with SNS's confirmation
    handshake, and signed deliveries (`Poster`: retried, no thread held while waiting).
    `base` is where this sandbox is reached (its certificate and SubscribeURLs)."""

    def __init__(
        self,
        key: SigningKey,
        region: str,
        *,
        confirmation_delays: tuple[float, ...] = CONFIRMATION_DELAYS,
        notification_delays: tuple[float, ...] = NOTIFICATION_DELAYS,
    ) -> None:
        self.key = key
        self.region = region
        self.base = ""
        self.deliveries: list[Delivery] = []
        self._topics: dict[str, dict[str, _Subscription]] = {}
        self._lock = threading.Lock()
        self._confirmation_delays = confirmation_delays
        self._poster = Poster("s3-sandbox-sns", notification_delays)
        self._http = httpx.Client(timeout=SNS_TIMEOUT_SECONDS)

    @property
    def signer(self) -> SnsSigner:
        return SnsSigner(self.key, self.base)

    def topic_arn(self, name: str) -> str:
        return f"arn:aws:sns:{self.region}:{SANDBOX_ACCOUNT_ID}:{name}"

    def create_topic(self, name: str) -> str:
        """The topic's ARN; made when absent (CreateTopic is idempotent)."""
        arn = self.topic_arn(name)
        with self._lock:
            self._topics.setdefault(arn, {})
        return arn

    def subscribe(self, topic_arn: str, endpoint: str) -> str:
        """Subscribe `endpoint` (http or https) and send it SNS's SubscriptionConfirmation;
        the subscription's ARN (the same one for the same endpoint). KeyError: no topic."""
        with self._lock:
            subscriptions = self._topics[topic_arn]
            for existing in subscriptions.values():
                if existing.endpoint == endpoint:
                    return existing.arn
            subscription = _Subscription(
                arn=f"{topic_arn}:{uuid.uuid4()}",
                topic_arn=topic_arn,
                endpoint=endpoint,
                token=os.urandom(64).hex(),
            )
            subscriptions[subscription.arn] = subscription
        self._poster.scheduler.call_later(
            self._confirmation_delays[0], lambda: self._send_confirmation(subscription, 0)
        )
        return subscription.arn

    def _current(self, subscription: _Subscription) -> bool:
        return subscription.arn in self._topics.get(subscription.topic_arn, {})

    def _send_confirmation(self, subscription: _Subscription, attempt: int) -> None:
        with self._lock:
            if subscription.confirmed or not self._current(subscription):
                return
        message = self.signer.confirmation(subscription.topic_arn, subscription.token)
        try:
            self._http.post(
                subscription.endpoint,
                content=json.dumps(message),
                headers=self._headers(message),
            )
        except httpx.HTTPError:
            pass  # nobody there yet (relay dev starts the API after the sandbox)
        with self._lock:
            if subscription.confirmed or not self._current(subscription):
                return
        if attempt + 1 >= CONFIRMATION_ATTEMPTS:
            logger.warning("s3 sandbox: %s never confirmed its subscription", subscription.endpoint)
            return
        delays = self._confirmation_delays
        delay = delays[min(attempt + 1, len(delays) - 1)]
        self._poster.scheduler.call_later(
            delay, lambda: self._send_confirmation(subscription, attempt + 1)
        )

    def confirm(self, topic_arn: str, token: str) -> str | None:
        """SNS's ConfirmSubscription: the subscription's ARN, or None for a wrong token.
        What waited for the confirmation goes out now."""
        with self._lock:
            found = [
                subscription
                for subscription in self._topics.get(topic_arn, {}).values()
                if hmac.compare_digest(subscription.token, token)
            ]
            if not found:
                return None
            subscription = found[0]
            subscription.confirmed = True
            held, subscription.held = subscription.held, []
        for message in held:
            self._deliver(subscription, message)
        return subscription.arn

    def unsubscribe(self, subscription_arn: str) -> bool:
        with self._lock:
            for subscriptions in self._topics.values():
                if subscriptions.pop(subscription_arn, None) is not None:
                    return True
        return False

    def publish(self, topic_arn: str, message: str, subject: str | None) -> str:
        """Send `message` to every subscription of the topic (held until it confirmed);
        the MessageId. Nothing happens for a topic the sandbox does not have."""
        message_id = str(uuid.uuid4())
        with self._lock:
            subscriptions = list(self._topics.get(topic_arn, {}).values())
        for subscription in subscriptions:
            signed = self.signer.notification(
                topic_arn,
                message,
                subject=subject,
                subscription_arn=subscription.arn,
                message_id=message_id,
            )
            with self._lock:
                if not subscription.confirmed:
                    subscription.held.append(signed)
                    continue
            self._deliver(subscription, signed)
        return message_id

    def _deliver(self, subscription: _Subscription, message: dict[str, str]) -> None:
        delivery = Delivery(subscription.endpoint)
        with self._lock:
            self.deliveries = [*self.deliveries[-99:], delivery]
        headers = self._headers(message) | {"x-amz-sns-subscription-arn": subscription.arn}
        self._poster.post(delivery, headers=headers, content=json.dumps(message).encode())

    @staticmethod
    def _headers(message: dict[str, str]) -> dict[str, str]:
        return {
            "Content-Type": "text/plain; charset=UTF-8",
            "User-Agent": "Amazon Simple Notification Service Agent",
            "x-amz-sns-message-type": message["Type"],
            "x-amz-sns-message-id": message["MessageId"],
            "x-amz-sns-topic-arn": message["TopicArn"],
        }

    def close(self) -> None:
        self._poster.close()
        self._http.close()


def _xml_response(start_response: Callable[..., Any], status: str, document: str) -> list[bytes]:
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n' + document).encode()
    start_response(status, [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))])
    return [body]


def _sns_answer(start_response: Callable[..., Any], action: str, result: str = "") -> list[bytes]:
    inner = f"<{action}Result>{result}</{action}Result>" if result else ""
    metadata = f"<ResponseMetadata><RequestId>{uuid.uuid4()}</RequestId></ResponseMetadata>"
    document = f'<{action}Response xmlns="{_SNS_XMLNS}">{inner}{metadata}</{action}Response>'
    return _xml_response(start_response, "200 OK", document)


def _sns_error(
    start_response: Callable[..., Any], status: str, code: str, message: str
) -> list[bytes]:
    document = (
        f'<ErrorResponse xmlns="{_SNS_XMLNS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error><RequestId>{uuid.uuid4()}</RequestId>"
        "</ErrorResponse>"
    )
    return _xml_response(start_response, status, document)


class SnsApi:
    """WSGI middleware answering SNS where boto3's SNS client and SNS's subscribers reach
    it: the query API (POST `/`, credential scope `sns`: CreateTopic, Subscribe,
    Unsubscribe), the SubscribeURL and UnsubscribeURL GETs, and the signing certificate.
    Every other request goes to S3."""

    def __init__(self, app: Callable[..., Any], topics: SnsTopics) -> None:
        self.app = app
        self.topics = topics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO") or "/"
        if method == "GET" and path == "/" + self.topics.signer.cert_name:
            pem = self.topics.key.certificate_pem.encode("ascii")
            start_response(
                "200 OK",
                [("Content-Type", "application/x-pem-file"), ("Content-Length", str(len(pem)))],
            )
            return [pem]
        if path != "/":
            return self.app(environ, start_response)
        if method == "GET":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            if query.get("Action", [""])[0] in ("ConfirmSubscription", "Unsubscribe"):
                return self._action(query, start_response)
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        if method == "POST" and "/sns/aws4_request" in authorization:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length).decode("utf-8", "replace")
            return self._action(parse_qs(body), start_response)
        return self.app(environ, start_response)

    def _action(self, params: dict[str, list[str]], start_response: Callable[..., Any]) -> Any:
        def param(name: str) -> str:
            return params.get(name, [""])[0]

        action = param("Action")
        if action == "CreateTopic":
            if not param("Name"):
                return _sns_error(start_response, "400 Bad Request", "InvalidParameter", "Name")
            arn = self.topics.create_topic(param("Name"))
            return _sns_answer(start_response, action, f"<TopicArn>{escape(arn)}</TopicArn>")
        if action == "Subscribe":
            protocol, endpoint = param("Protocol"), param("Endpoint")
            if protocol not in ("http", "https") or not endpoint.startswith(f"{protocol}://"):
                return _sns_error(
                    start_response,
                    "400 Bad Request",
                    "InvalidParameter",
                    "Invalid parameter: the sandbox delivers to http and https endpoints",
                )
            try:
                arn = self.topics.subscribe(param("TopicArn"), endpoint)
            except KeyError:
                return _sns_error(
                    start_response, "404 Not Found", "NotFound", "Topic does not exist"
                )
            shown = arn if param("ReturnSubscriptionArn") == "true" else "pending confirmation"
            return _sns_answer(
                start_response, action, f"<SubscriptionArn>{escape(shown)}</SubscriptionArn>"
            )
        if action == "ConfirmSubscription":
            confirmed = self.topics.confirm(param("TopicArn"), param("Token"))
            if confirmed is None:
                return _sns_error(
                    start_response, "400 Bad Request", "InvalidParameter", "Invalid token"
                )
            return _sns_answer(
                start_response, action, f"<SubscriptionArn>{escape(confirmed)}</SubscriptionArn>"
            )
        if action == "Unsubscribe":
            self.topics.unsubscribe(param("SubscriptionArn"))
            return _sns_answer(start_response, action)
        return _sns_error(
            start_response, "400 Bad Request", "InvalidAction", f"{action} is not in the sandbox"
        )
