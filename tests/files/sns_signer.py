"""SNS, as far as Relay's S3 webhook sees it: an RSA key and a self-signed certificate made
here, the certificate served from a loopback HTTP server (which also answers SubscribeURL
GETs and remembers them), and messages signed exactly as SNS signs them (its documented
canonical string, SHA1withRSA for SignatureVersion 1, SHA256withRSA for 2)."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote_plus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

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
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


class SnsSigner:
    """A signing key, its certificate on loopback, and SubscribeURL GETs received."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.pem = _certificate(self.key).public_bytes(serialization.Encoding.PEM)
        self.certificate_fetches = 0
        self.confirmations: list[str] = []
        signer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.endswith(".pem"):
                    signer.certificate_fetches += 1
                    body = signer.pem
                else:
                    signer.confirmations.append(self.path)
                    body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"

    def __enter__(self) -> SnsSigner:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def sign(self, message: dict[str, str], version: str = "2") -> dict[str, str]:
        """`message` with SignatureVersion, SigningCertURL and Signature, as SNS sends it."""
        signed = {**message, "SignatureVersion": version}
        signed.setdefault("SigningCertURL", self.cert_url)
        order = NOTIFICATION_FIELDS if signed["Type"] == "Notification" else CONFIRMATION_FIELDS
        canonical = "".join(f"{name}\n{signed[name]}\n" for name in order if name in signed)
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signature = self.key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
        signed["Signature"] = base64.b64encode(signature).decode()
        return signed

    def notification(
        self, topic: str, records: list[dict[str, Any]], *, version: str = "2"
    ) -> dict[str, str]:
        return self.sign(
            {
                "Type": "Notification",
                "MessageId": str(uuid.uuid4()),
                "TopicArn": topic,
                "Subject": "Amazon S3 Notification",
                "Message": json.dumps({"Records": records}),
                "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
                "UnsubscribeURL": f"{self.base}/?Action=Unsubscribe",
            },
            version,
        )

    def confirmation(self, topic: str, token: str) -> dict[str, str]:
        return self.sign(
            {
                "Type": "SubscriptionConfirmation",
                "MessageId": str(uuid.uuid4()),
                "Token": token,
                "TopicArn": topic,
                "Message": f"You have chosen to subscribe to the topic {topic}.",
                "SubscribeURL": f"{self.base}/?Action=ConfirmSubscription&Token={token}",
                "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            }
        )


def s3_record(
    bucket: str, key: str, *, size: int = 1, event: str = "ObjectCreated:Post", seq: str = ""
) -> dict[str, Any]:
    """One record of an S3 event notification (event structure version 2.1); the key
    URL-encoded as S3 sends it."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": datetime.now(UTC).isoformat(),
        "eventName": event,
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "relay-uploads",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size,
                "sequencer": seq or uuid.uuid4().hex[:18].upper(),
            },
        },
    }
