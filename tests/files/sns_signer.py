"""SNS, as far as Relay's S3 webhook sees it, for the tests: the sandbox's signer
(relay.sandbox.sns: a key and a self-signed certificate made here, messages signed exactly
as SNS signs them) behind a loopback HTTP server that serves the certificate and answers
SubscribeURL GETs, remembering both."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from relay.sandbox.s3 import s3_event_record
from relay.sandbox.sns import SigningKey, SnsSigner


class LoopbackSns:
    """A signing key, its certificate on loopback, and SubscribeURL GETs received."""

    def __init__(self) -> None:
        self.key = SigningKey.generate()
        self.certificate_fetches = 0
        self.confirmations: list[str] = []
        sns = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.endswith(".pem"):
                    sns.certificate_fetches += 1
                    body = sns.pem.encode("ascii")
                else:
                    sns.confirmations.append(self.path)
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
    def pem(self) -> str:
        """The certificate (what S3_EVENTS_SANDBOX_CERTIFICATE pins)."""
        return self.key.certificate_pem

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def signer(self) -> SnsSigner:
        return SnsSigner(self.key, self.base, "SimpleNotificationService-test.pem")

    @property
    def cert_url(self) -> str:
        return self.signer.cert_url

    def __enter__(self) -> LoopbackSns:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def sign(self, message: dict[str, str], version: str = "2") -> dict[str, str]:
        """`message` with SignatureVersion, SigningCertURL (unless given) and Signature."""
        return self.signer.sign(message, version)

    def notification(
        self, topic: str, records: list[dict[str, Any]], *, version: str = "2"
    ) -> dict[str, str]:
        return self.signer.records_notification(topic, records, version=version)

    def confirmation(self, topic: str, token: str) -> dict[str, str]:
        return self.signer.confirmation(topic, token)


def s3_record(
    bucket: str, key: str, *, size: int = 1, event: str = "ObjectCreated:Post", seq: str = ""
) -> dict[str, Any]:
    """One record of an S3 event notification (event structure version 2.1), as the S3
    sandbox makes them; the key URL-encoded as S3 sends it."""
    return s3_event_record(bucket, key, event_name=event, size=size, sequencer=seq)
