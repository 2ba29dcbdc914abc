"""The S3 sandbox's event notifications: S3's event JSON in SNS Notifications signed with
the sandbox's key, after SNS's subscription handshake; Relay's own verifier accepts them
only with the sandbox's certificate pinned (S3_EVENTS_SANDBOX_CERTIFICATE), never in
production; and in a real stack an upload with the presigned POST reaches READY with no
`complete` call."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from relay.errors import ConfigError, ErrorCode, RelayError
from relay.files import sns
from relay.models.inbound import InboundEvent
from relay.sandbox.s3 import S3Sandbox, S3Server
from relay.settings import Settings
from tests.conftest import Stack, eventually
from tests.files import samples
from tests.files.conftest import bucket_keys, post_form, start_upload, wait_processed

inbox = InboundEvent.__table__  # type: ignore[attr-defined]


class Subscriber:
    """An HTTP endpoint subscribed to the sandbox's topic, doing what Relay's route does
    with a SubscriptionConfirmation (GET its SubscribeURL), except the first
    `refuse_confirmations` times (answered 503, as an API not up yet)."""

    def __init__(self, refuse_confirmations: int = 0) -> None:
        self.messages: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.refusals = refuse_confirmations
        self.lock = threading.Lock()
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message = json.loads(body)
                # Recorded first: confirming lets held notifications race this handler.
                with subscriber.lock:
                    subscriber.messages.append(message)
                    subscriber.headers.append(dict(self.headers))
                status = 200
                if message["Type"] == "SubscriptionConfirmation" and subscriber.refusals > 0:
                    subscriber.refusals -= 1
                    status = 503
                elif message["Type"] == "SubscriptionConfirmation":
                    httpx.get(message["SubscribeURL"]).raise_for_status()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/s3"

    def notifications(self) -> list[dict[str, str]]:
        return [message for message in self.messages if message["Type"] == "Notification"]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    # The first confirmation finds nobody: the sandbox sends it again.
    running = Subscriber(refuse_confirmations=1)
    yield running
    running.close()


@pytest.fixture
def sandbox(subscriber: Subscriber) -> Iterator[tuple[S3Sandbox, S3Server]]:
    """A sandbox in this process that, as under `relay dev`, subscribes `events_url`."""
    sandbox = S3Sandbox(port=0, events_url=subscriber.url)
    with sandbox.run_in_thread() as server:
        yield sandbox, server


def relay_settings(make_settings: Callable[..., Settings], sandbox: S3Sandbox) -> Settings:
    """Relay as `relay dev` configures it: the sandbox's environment()."""
    environment = {name.lower(): value for name, value in sandbox.environment().items()}
    return make_settings(**environment)


async def verify(message: dict[str, str], settings: Settings) -> None:
    parsed = sns.parse(json.dumps(message).encode())
    await sns.verify(parsed, settings, sns.CertificateCache())


async def test_the_sandbox_notifies_uploads_as_s3_and_sns_do(
    sandbox: tuple[S3Sandbox, S3Server],
    subscriber: Subscriber,
    make_settings: Callable[..., Settings],
) -> None:
    s3_sandbox, server = sandbox
    s3 = s3_sandbox.client()
    # Written while the subscription is (most likely) still unconfirmed: nothing reaches
    # the endpoint before it confirms.
    s3.put_object(Bucket=s3_sandbox.bucket, Key="temp/file_1/red flower.jpg", Body=b"12345")
    s3.copy_object(
        Bucket=s3_sandbox.bucket,
        Key="temp/file_2/copy.jpg",
        CopySource={"Bucket": s3_sandbox.bucket, "Key": "temp/file_1/red flower.jpg"},
    )
    # Outside the notification's prefix (Relay's own renditions): no event.
    s3.put_object(Bucket=s3_sandbox.bucket, Key="thumbnails/m1/thumb-64-a.jpg", Body=b"x")
    post = s3.generate_presigned_post(
        s3_sandbox.bucket,
        "temp/file_3/form.png",
        Fields={"Content-Type": "image/png"},
        Conditions=[{"Content-Type": "image/png"}, ["content-length-range", 1, 100]],
    )
    form = httpx.post(post["url"], data=post["fields"], files={"file": ("f", b"abc", "image/png")})
    assert form.status_code == 204, form.text
    # A refused upload (too big for its policy) stores nothing and notifies nothing.
    too_big = httpx.post(post["url"], data=post["fields"], files={"file": ("f", b"x" * 200)})
    assert too_big.status_code == 400

    await eventually(lambda: len(subscriber.notifications()) == 3, timeout=30)
    # The handshake came first: refused once, sent again, confirmed; then the events.
    types = [message["Type"] for message in subscriber.messages]
    assert types == ["SubscriptionConfirmation"] * 2 + ["Notification"] * 3

    settings = relay_settings(make_settings, s3_sandbox)
    assert settings.s3_events_topic_arns == [s3_sandbox.topic_arn()]
    records = []
    for message, headers in zip(subscriber.messages, subscriber.headers, strict=True):
        # Each one verifies with Relay's own verifier, the sandbox's certificate pinned.
        await verify(message, settings)
        assert headers["x-amz-sns-message-type"] == message["Type"]
        assert message["TopicArn"] == s3_sandbox.topic_arn()
        assert message["SignatureVersion"] == "2"
        assert message["SigningCertURL"].startswith(s3_sandbox.endpoint_url)
        if message["Type"] == "Notification":
            assert message["UnsubscribeURL"].startswith(s3_sandbox.endpoint_url)
            (record,) = json.loads(message["Message"])["Records"]
            records.append(record)
    by_name = {record["eventName"]: record for record in records}
    assert set(by_name) == {"ObjectCreated:Put", "ObjectCreated:Copy", "ObjectCreated:Post"}
    put = by_name["ObjectCreated:Put"]
    assert put["eventVersion"] == "2.1" and put["eventSource"] == "aws:s3"
    assert put["s3"]["bucket"]["name"] == s3_sandbox.bucket
    assert put["s3"]["object"]["key"] == "temp/file_1/red+flower.jpg"
    assert put["s3"]["object"]["size"] == 5
    head = s3.head_object(Bucket=s3_sandbox.bucket, Key="temp/file_1/red flower.jpg")
    assert put["s3"]["object"]["eTag"] == head["ETag"].strip('"')
    assert by_name["ObjectCreated:Post"]["s3"]["object"]["key"] == "temp/file_3/form.png"
    assert by_name["ObjectCreated:Post"]["s3"]["object"]["size"] == 3
    sequencers = [record["s3"]["object"]["sequencer"] for record in records]
    assert len(set(sequencers)) == 3

    # The certificate the messages name is served, and it is the one Relay pins.
    served = httpx.get(subscriber.messages[0]["SigningCertURL"]).text
    assert served == settings.s3_events_sandbox_certificate
    assert len(server.topics.deliveries) == 3


async def test_a_sandbox_notification_is_refused_without_the_dev_trust(
    sandbox: tuple[S3Sandbox, S3Server],
    subscriber: Subscriber,
    make_settings: Callable[..., Settings],
) -> None:
    s3_sandbox, _ = sandbox
    s3_sandbox.client().put_object(Bucket=s3_sandbox.bucket, Key="temp/file_1/a.jpg", Body=b"1")
    await eventually(lambda: len(subscriber.notifications()) == 1, timeout=30)
    (message,) = subscriber.notifications()
    trusted = relay_settings(make_settings, s3_sandbox)
    await verify(message, trusted)

    environment = {name.lower(): value for name, value in s3_sandbox.environment().items()}
    untrusted = [
        # The setting absent: the sandbox in use is not enough.
        make_settings(**(environment | {"s3_events_sandbox_certificate": None})),
        # SANDBOX=off, or S3 not on loopback.
        make_settings(**(environment | {"sandbox": "off"})),
        make_settings(**(environment | {"s3_endpoint_url": "https://s3.eu-west-1.amazonaws.com"})),
        # Production, whatever else is set.
        Settings.model_construct(**(environment | {"relay_env": "production", "sandbox": "auto"})),
    ]
    for settings in untrusted:
        with pytest.raises(RelayError) as caught:
            await verify(message, settings)
        assert caught.value.code == ErrorCode.INVALID_SIGNATURE


def test_production_refuses_to_start_with_the_sandbox_certificate(
    make_settings: Callable[..., Settings],
) -> None:
    pem = S3Sandbox(port=0).signing_key.certificate_pem
    production = {
        "relay_env": "production",
        "database_url": "postgresql+psycopg://relay@db:5432/relay",
        "public_base_url": "https://relay.example.com",
        "oauth_allowed_redirects": "https://app.example.com",
    }
    make_settings(**production).check()
    with pytest.raises(ConfigError, match="S3_EVENTS_SANDBOX_CERTIFICATE is set"):
        make_settings(**production, s3_events_sandbox_certificate=pem).check()


def test_relay_dev_plans_the_sandbox_with_its_events(
    make_settings: Callable[..., Settings],
) -> None:
    from relay.sandbox import s3 as s3_sandbox

    settings = make_settings(relay_env="development", api_port=8123)
    planned = s3_sandbox.plan(settings)
    assert planned is not None
    assert planned.events_url == "http://127.0.0.1:8123/webhooks/s3"
    command = planned.command()
    assert command[command.index("--events-url") + 1] == planned.events_url
    # The key is kept in DATA_DIR (a restarted sandbox signs with the same certificate)
    # and never on the command line.
    assert planned.key_file == settings.data_dir / s3_sandbox.SNS_KEY_FILE_NAME
    assert planned.key_file.stat().st_mode & 0o077 == 0
    assert "PRIVATE KEY" not in " ".join(command)
    again = s3_sandbox.plan(settings)
    assert again is not None
    environment = planned.environment()
    assert (
        again.environment()["S3_EVENTS_SANDBOX_CERTIFICATE"]
        == (environment["S3_EVENTS_SANDBOX_CERTIFICATE"])
    )
    assert environment["S3_EVENTS_TOPIC_ARNS"] == planned.topic_arn()


# --- a real stack ----------------------------------------------------------------------------


@pytest.fixture
def topic_name() -> str:
    return f"relay-test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def files_overrides(s3: S3Sandbox, topic_name: str) -> dict[str, object]:
    # What the sandbox's environment() hands Relay, for this test's topic.
    return {
        "s3_events_topic_arns": s3.topic_arn(topic_name),
        "s3_events_sandbox_certificate": s3.signing_key.certificate_pem,
    }


@pytest.mark.e2e
async def test_an_upload_through_the_sandbox_reaches_ready_without_complete(
    files_stack: Stack, s3: S3Sandbox, topic_name: str
) -> None:
    # Set up as on AWS: topic, the bucket's notification, Relay's route subscribed (the
    # sandbox process sends the confirmation; Relay confirms it).
    _, subscription = s3.subscribe_events(f"{files_stack.api_url}/webhooks/s3", topic_name)
    try:
        data = samples.jpeg_with_exif(320, 240, orientation=1, gps=False)
        created = await start_upload(
            files_stack,
            kind="avatar",
            userId=f"user-{uuid.uuid4().hex[:8]}",
            filename="From the sandbox.jpg",
            contentType="image/jpeg",
            size=len(data),
        )
        assert created.status_code == 201, created.text
        upload = created.json()["data"]
        assert (await post_form(upload, data, "image/jpeg")).status_code == 204

        # No /complete: the sandbox's event alone takes the file to READY.
        file = await wait_processed(files_stack, upload["id"])
        assert file["status"] == "READY", file
        assert [rendition["name"] for rendition in file["renditions"]]
        assert not [key for key in bucket_keys(s3) if key.startswith("temp/")]
        with files_stack.engine.connect() as connection:
            rows = list(connection.execute(select(inbox).where(inbox.c.provider == "s3")))
        # One event (the upload's): Relay's own writes are outside the notified prefix.
        assert [(row.type, row.object_id, row.status) for row in rows] == [
            ("ObjectCreated:Post", upload["id"], "FORWARDED")
        ]
    finally:
        s3.client("sns").unsubscribe(SubscriptionArn=subscription)
