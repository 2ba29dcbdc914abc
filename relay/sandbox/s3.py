"""The S3 sandbox: moto's S3 server (moto[server], PyPI), with the POST-policy check S3
does and moto lacks, and Relay's bucket created with a CORS rule.

`relay dev` runs it when S3_BUCKET is unset in development (SANDBOX=auto) on a free port
and hands the worker and the API S3_BUCKET / S3_ENDPOINT_URL / AWS_REGION /
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY pointing at it; boto3 (one code path) talks to
it as it would to S3. The tests start it the same way (`S3Sandbox.command()`), or in a
thread of their own process (`S3Sandbox(port=0).run_in_thread()`).

moto 5 stores a browser's form upload (a presigned POST) without looking at its policy.
S3 refuses an upload whose policy has expired, whose signature does not verify, whose
fields break a condition (`eq`, `starts-with`, exact match) or carry a field the policy
does not name, and whose file falls outside `content-length-range`. `PostPolicyCheck`
(WSGI, in front of moto) answers those with S3's own error documents (403 AccessDenied
"Invalid according to Policy: …", 400 EntityTooLarge / EntityTooSmall), so presigned
uploads behave here as on S3: the declared size and content type are enforced, and an
upload URL used after expiry is refused.

The bucket is created at start (moto keeps everything in memory: a restarted sandbox
starts empty) with a CORS rule allowing GET, PUT, POST and HEAD from any origin, so a
page served anywhere can upload with the presigned POST.

S3 event notifications, as S3 and SNS deliver them (docs/files.md). moto stores a bucket's
notification configuration but publishes to its own SNS, whose messages no one can verify,
so the sandbox plays SNS itself (relay.sandbox.sns: `SnsTopics`, and `SnsApi` answering
SNS's query API for CreateTopic, Subscribe and Unsubscribe, and SNS's SubscribeURL /
UnsubscribeURL GETs): after a write that S3 reports as `s3:ObjectCreated:Post` (a form upload), `:Put`, `:Copy` or
`:CompleteMultipartUpload` (path-style requests), each TopicConfiguration of the bucket
that matches the event and the key's prefix/suffix gets S3's event JSON (eventVersion 2.1:
bucket, URL-encoded key, size, eTag, a sequencer increasing per process) in an SNS
Notification signed with the sandbox's key (`relay.sandbox.sns`, SignatureVersion 2), POSTed
to each of the topic's HTTP(S) subscriptions. A subscription first gets SNS's
SubscriptionConfirmation, sent again (backing off to every 10 s) until the endpoint GETs
its SubscribeURL; its notifications wait for that, then go out with three attempts each.
Started with `--events-url` (`relay dev`: Relay's `/webhooks/s3`), the sandbox makes its
topic, configures its bucket to notify it of `s3:ObjectCreated:*` under `temp/` (the
configuration docs/files.md asks of a real bucket) and subscribes that URL; Relay gets the
topic and the certificate to trust from `environment()` (S3_EVENTS_TOPIC_ARNS,
S3_EVENTS_SANDBOX_CERTIFICATE). Not modelled: S3's TestEvent on configuration, SNS's
delivery policies, raw delivery, filter policies, SigV4 checks of the SNS calls.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus
from xml.sax.saxutils import escape

from relay.errors import ConfigError
from relay.sandbox.sns import SANDBOX_ACCOUNT_ID, SigningKey, SnsApi, SnsTopics
from relay.settings import Settings

logger = logging.getLogger(__name__)

# Credentials the sandbox accepts and signs with; like localstripe's test key, they open
# nothing but this local server.
SANDBOX_ACCESS_KEY_ID = "relay-sandbox"
SANDBOX_SECRET_ACCESS_KEY = "relay-sandbox-secret"  # noqa: S105 - a local sandbox's credential
SANDBOX_BUCKET = "relay-dev"
SANDBOX_REGION = "us-east-1"
READY_SECONDS = 30
# Form fields S3 does not require a policy condition for.
_UNCHECKED_FIELDS = frozenset({"policy", "x-amz-signature", "file", "awsaccesskeyid", "signature"})
# The topic `--events-url` subscribes, and the notification the bucket gets for it.
EVENTS_TOPIC_NAME = "relay-sandbox-s3-events"
EVENTS_CONFIGURATION_ID = "relay-uploads"
EVENTS_PREFIX = "temp/"
# In DATA_DIR: the SNS signing key `relay dev`'s sandbox keeps across restarts, so the
# certificate Relay was handed (S3_EVENTS_SANDBOX_CERTIFICATE) still holds.
SNS_KEY_FILE_NAME = "s3-sandbox-sns.pem"
CORS_RULE: dict[str, Any] = {
    "AllowedMethods": ["GET", "PUT", "POST", "HEAD"],
    "AllowedOrigins": ["*"],
    "AllowedHeaders": ["*"],
    "ExposeHeaders": ["ETag", "Location"],
    "MaxAgeSeconds": 3000,
}


def wanted(settings: Settings) -> bool:
    """SANDBOX=auto, development, and no bucket: the sandbox stands in for S3."""
    return (
        settings.sandbox == "auto"
        and settings.relay_env == "development"
        and settings.s3_bucket is None
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the POST policy check -----------------------------------------------------------------


class PolicyRefused(Exception):
    """A form upload S3 would refuse: its status, S3's error code and message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _signing_key(secret: str, date: str, region: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def check_post_policy(
    fields: dict[str, str],
    size: int,
    *,
    bucket: str,
    credentials: dict[str, str],
    now: dt.datetime | None = None,
) -> None:
    """Raise `PolicyRefused` unless S3 would accept this form upload (AWS SigV4 POST
    policy: signature over the base64 policy, expiration, every condition, no field
    the policy does not name). `fields` are the form's fields (names lower-cased),
    `size` the file's length in bytes, `credentials` access key id → secret."""
    policy_b64 = fields.get("policy")
    if not policy_b64:
        raise PolicyRefused(403, "AccessDenied", "Bucket POST must contain a field named 'policy'.")
    credential = fields.get("x-amz-credential", "")
    parts = credential.split("/")
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256" or len(parts) != 5:
        raise PolicyRefused(403, "AccessDenied", "Invalid according to Policy: bad credential.")
    access_key, date, region = parts[0], parts[1], parts[2]
    secret = credentials.get(access_key)
    if secret is None:
        raise PolicyRefused(
            403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist."
        )
    expected = hmac.new(
        _signing_key(secret, date, region), policy_b64.encode(), hashlib.sha256
    ).hexdigest()
    if not hmac.compare_digest(expected, fields.get("x-amz-signature", "")):
        raise PolicyRefused(
            403,
            "SignatureDoesNotMatch",
            "The request signature we calculated does not match the signature you provided.",
        )
    try:
        policy = json.loads(base64.b64decode(policy_b64))
        expiration = dt.datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
        conditions = list(policy.get("conditions", []))
    except (binascii.Error, ValueError, KeyError, TypeError, AttributeError):
        raise PolicyRefused(400, "InvalidPolicyDocument", "Invalid Policy: malformed.") from None
    if (now or dt.datetime.now(dt.UTC)) > expiration:
        raise PolicyRefused(403, "AccessDenied", "Invalid according to Policy: Policy expired.")
    values = {**fields, "bucket": bucket}
    named = {"bucket"}
    for condition in conditions:
        if isinstance(condition, dict):
            for name, value in condition.items():
                named.add(name.lower())
                if values.get(name.lower()) != value:
                    raise _condition_failed(["eq", f"${name}", value])
        elif isinstance(condition, list) and condition and condition[0] == "content-length-range":
            low, high = int(condition[1]), int(condition[2])
            if size > high:
                raise PolicyRefused(
                    400, "EntityTooLarge", "Your proposed upload exceeds the maximum allowed size"
                )
            if size < low:
                raise PolicyRefused(
                    400,
                    "EntityTooSmall",
                    "Your proposed upload is smaller than the minimum allowed size",
                )
        elif isinstance(condition, list) and len(condition) == 3:
            operator, name, value = condition
            name = str(name).lstrip("$").lower()
            named.add(name)
            actual = values.get(name, "")
            ok = actual == value if operator == "eq" else actual.startswith(str(value))
            if operator not in ("eq", "starts-with") or not ok:
                raise _condition_failed(condition)
    extra = sorted(
        name
        for name in fields
        if name not in named and name not in _UNCHECKED_FIELDS and not name.startswith("x-ignore-")
    )
    if extra:
        raise PolicyRefused(
            403,
            "AccessDenied",
            f"Invalid according to Policy: Extra input fields: {', '.join(extra)}",
        )


def _condition_failed(condition: Iterable[Any]) -> PolicyRefused:
    shown = ", ".join(json.dumps(part) for part in condition)
    return PolicyRefused(
        403, "AccessDenied", f"Invalid according to Policy: Policy Condition failed: [{shown}]"
    )


def _error_document(refused: PolicyRefused) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{refused.code}</Code><Message>{escape(refused.message)}</Message>"
        f"<RequestId>relay-sandbox</RequestId></Error>"
    ).encode()


FORM_KEY = "relay.s3_sandbox.form_key"


class PostPolicyCheck:
    """WSGI middleware: a multipart form POST to a bucket passes to moto only when its
    policy holds (`check_post_policy`); every other request goes straight through."""

    def __init__(self, app: Callable[..., Any], credentials: dict[str, str]) -> None:
        self.app = app
        self.credentials = credentials

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        content_type = environ.get("CONTENT_TYPE", "")
        path = environ.get("PATH_INFO", "/").strip("/")
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or not content_type.startswith("multipart/form-data")
            or not path
            or "/" in path
        ):
            return self.app(environ, start_response)
        from werkzeug.formparser import parse_form_data

        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
        probe = dict(environ, **{"wsgi.input": io.BytesIO(body)})
        _, form, files = parse_form_data(probe)
        upload = files.get("file")
        size = len(upload.read()) if upload is not None else 0
        fields = {name.lower(): value for name, value in form.items()}
        try:
            check_post_policy(fields, size, bucket=path, credentials=self.credentials)
        except PolicyRefused as refused:
            document = _error_document(refused)
            start_response(
                f"{refused.status} {'Forbidden' if refused.status == 403 else 'Bad Request'}",
                [("Content-Type", "application/xml"), ("Content-Length", str(len(document)))],
            )
            return [document]
        environ["wsgi.input"] = io.BytesIO(body)
        # The object's key, for its ObjectCreated:Post notification (`S3EventNotifications`).
        key = fields.get("key", "")
        filename = upload.filename if upload is not None and upload.filename else ""
        environ[FORM_KEY] = key.replace("${filename}", filename)
        return self.app(environ, start_response)


# --- S3 event notifications through SNS ---------------------------------------------------


def s3_event_record(
    bucket: str,
    key: str,
    *,
    event_name: str = "ObjectCreated:Post",
    size: int = 0,
    etag: str = "",
    sequencer: str = "",
    region: str = SANDBOX_REGION,
    configuration_id: str = EVENTS_CONFIGURATION_ID,
    source_ip: str = "127.0.0.1",
) -> dict[str, Any]:
    """One record of S3's event notification (event structure 2.1), the key URL-encoded
    as S3 encodes it (`red flower.jpg` → `red+flower.jpg`, slashes kept)."""
    return {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": region,
        "eventTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "eventName": event_name,
        "userIdentity": {"principalId": f"AWS:{SANDBOX_ACCOUNT_ID}"},
        "requestParameters": {"sourceIPAddress": source_ip},
        "responseElements": {
            "x-amz-request-id": uuid.uuid4().hex[:16].upper(),
            "x-amz-id-2": base64.b64encode(os.urandom(32)).decode("ascii"),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": configuration_id,
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": SANDBOX_ACCOUNT_ID},
                "arn": f"arn:aws:s3:::{bucket}",
            },
            "object": {
                "key": quote_plus(key, safe="/"),
                "size": size,
                "eTag": etag,
                "sequencer": sequencer or uuid.uuid4().hex[:18].upper(),
            },
        },
    }


class _Sequencer:
    """S3's `sequencer`: hex, greater for each later event (per process, here)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._last = max(self._last + 1, time.time_ns())
            return f"{self._last:018X}"


def _created_event(environ: dict[str, Any]) -> tuple[str, str, str] | None:
    """(event name, bucket, key) when this request creates an object, as S3 names the
    event; None otherwise (path-style addressing)."""
    method = environ.get("REQUEST_METHOD")
    # WSGI hands the decoded path as latin-1; S3 keys are UTF-8.
    raw = (environ.get("PATH_INFO") or "/").lstrip("/")
    path = raw.encode("latin-1", "replace").decode("utf-8", "replace")
    bucket, _, key = path.partition("/")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if method == "POST" and not key and environ.get(FORM_KEY):
        return "ObjectCreated:Post", bucket, str(environ[FORM_KEY])
    if not bucket or not key:
        return None
    if method == "POST" and set(query) == {"uploadId"}:
        return "ObjectCreated:CompleteMultipartUpload", bucket, key
    # Other queries (`?tagging`, `?acl`, a part's `?partNumber`) write no object.
    if method == "PUT" and not set(query) - {"x-id"}:
        copy = "HTTP_X_AMZ_COPY_SOURCE" in environ
        return ("ObjectCreated:Copy" if copy else "ObjectCreated:Put"), bucket, key
    return None


class S3EventNotifications:
    """WSGI middleware in front of moto: after a write S3 would notify of (`_created_event`,
    a 2xx answer), each TopicConfiguration of the bucket that matches publishes S3's event
    to the sandbox's SNS topic (moto keeps the configuration; its own SNS never delivers
    here: the sandbox's topics are not moto's)."""

    def __init__(self, app: Callable[..., Any], topics: SnsTopics) -> None:
        self.app = app
        self.topics = topics
        self._sequencer = _Sequencer()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        created = _created_event(environ)
        if created is None:
            return self.app(environ, start_response)
        status: list[int] = []

        def capture(line: str, headers: Any, exc_info: Any = None) -> Any:
            status.append(int(line.split()[0]))
            return start_response(line, headers, exc_info)

        answer = self.app(environ, capture)
        try:
            body = list(answer)
        finally:
            close = getattr(answer, "close", None)
            if close is not None:
                close()
        if status and 200 <= status[0] < 300:
            try:
                self.notify(*created, source_ip=environ.get("REMOTE_ADDR", "127.0.0.1"))
            except Exception:
                # Asynchronous in S3 too: a notification going wrong never fails the write.
                logger.exception("s3 sandbox: an event notification failed")
        return body

    def notify(self, event_name: str, bucket_name: str, key: str, *, source_ip: str) -> None:
        from moto.s3.models import s3_backends

        bucket = s3_backends[SANDBOX_ACCOUNT_ID]["global"].buckets.get(bucket_name)
        configuration = getattr(bucket, "notification_configuration", None)
        if bucket is None or configuration is None:
            return
        stored = bucket.keys.get(key)
        for notification in configuration.topic:
            if not notification.matches(f"s3:{event_name}", key):
                continue
            record = s3_event_record(
                bucket_name,
                key,
                event_name=event_name,
                size=int(getattr(stored, "size", 0) or 0),
                etag=str(getattr(stored, "etag", "")).strip('"'),
                sequencer=self._sequencer.next(),
                region=self.topics.region,
                configuration_id=notification.id,
                source_ip=source_ip,
            )
            message = json.dumps({"Records": [record]})
            self.topics.publish(notification.arn, message, "Amazon S3 Notification")


# --- the sandbox -----------------------------------------------------------------------------


@dataclass
class S3Sandbox:
    """One S3 sandbox server: its command, the settings that point Relay at it, its
    bucket's creation, and a way to run it in this process (tests; `port=0` binds a free
    port). With `events_url`, it notifies that URL of uploads under `temp/` through SNS.

    Its SNS signing key is kept in `key_file` (`relay dev`: DATA_DIR) and never on a
    command line; without one it is made in memory and `command()` writes it to a private
    temporary file. Copies (`dataclasses.replace`) share the key once it exists."""

    port: int = field(default_factory=_free_port)
    bucket: str = SANDBOX_BUCKET
    region: str = SANDBOX_REGION
    access_key_id: str = SANDBOX_ACCESS_KEY_ID
    secret_access_key: str = SANDBOX_SECRET_ACCESS_KEY
    host: str = "127.0.0.1"
    events_url: str | None = None
    key_file: Path | None = None
    sns_key: SigningKey | None = field(default=None, repr=False)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def signing_key(self) -> SigningKey:
        """The key the sandbox's SNS signs with (made, or read from `key_file`, once)."""
        if self.sns_key is None:
            if self.key_file is not None:
                self.sns_key = SigningKey.load_or_create(self.key_file)
            else:
                self.sns_key = SigningKey.generate()
        return self.sns_key

    def topic_arn(self, name: str = EVENTS_TOPIC_NAME) -> str:
        return f"arn:aws:sns:{self.region}:{SANDBOX_ACCOUNT_ID}:{name}"

    def command(self) -> list[str]:
        """The command line (the default secret is not repeated on it, the key never is).
        The key exists (kept in `key_file`) before the process starts, so the process and
        `environment()` agree on it."""
        key = self.signing_key
        if self.key_file is None:
            descriptor, name = tempfile.mkstemp(prefix="relay-s3-sns-", suffix=".pem")
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(key.file_contents())
            self.key_file = Path(name)
        command = [sys.executable, "-m", "relay.sandbox.s3", "--port", str(self.port)]
        command += ["--host", self.host, "--bucket", self.bucket, "--region", self.region]
        command += ["--access-key-id", self.access_key_id]
        command += ["--sns-key-file", str(self.key_file)]
        if self.secret_access_key != SANDBOX_SECRET_ACCESS_KEY:
            command += ["--secret-access-key", self.secret_access_key]
        if self.events_url is not None:
            command += ["--events-url", self.events_url]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's S3 code here; with
        `events_url`, the topic Relay accepts and the one certificate it trusts for it."""
        environment = {
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }
        if self.events_url is not None:
            environment["S3_EVENTS_TOPIC_ARNS"] = self.topic_arn()
            environment["S3_EVENTS_SANDBOX_CERTIFICATE"] = self.signing_key.certificate_pem
        return environment

    def ready(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            return sock.connect_ex((self.host, self.port)) == 0

    def wait_ready(self, timeout: float = READY_SECONDS) -> None:
        """Until the port answers and the bucket exists (the server creates it at start)."""
        deadline = time.monotonic() + timeout
        while not (self.ready() and self._bucket_exists()):
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"the S3 sandbox did not serve bucket {self.bucket!r} on port "
                    f"{self.port} in {timeout}s"
                )
            time.sleep(0.1)

    def client(self, service: str = "s3") -> Any:
        """A boto3 client for this server (S3 path-style, or `sns`; the sandbox's
        credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,  # type: ignore[call-overload]
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
            ),
        )

    def _bucket_exists(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client().head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    def ensure_bucket(self) -> None:
        """Create the bucket (idempotent) with the CORS rule browser uploads need."""
        s3 = self.client()
        if not self._bucket_exists():
            s3.create_bucket(Bucket=self.bucket)
        s3.put_bucket_cors(Bucket=self.bucket, CORSConfiguration={"CORSRules": [CORS_RULE]})

    def subscribe_events(
        self, endpoint: str, topic_name: str = EVENTS_TOPIC_NAME, prefix: str = EVENTS_PREFIX
    ) -> tuple[str, str]:
        """As one sets it up on AWS, through the APIs: a topic, the bucket's notification of
        `s3:ObjectCreated:*` under `prefix` to it, and `endpoint` subscribed (SNS sends it
        the SubscriptionConfirmation). The topic's and the subscription's ARNs."""
        sns = self.client("sns")
        topic = sns.create_topic(Name=topic_name)["TopicArn"]
        self.client().put_bucket_notification_configuration(
            Bucket=self.bucket,
            NotificationConfiguration={
                "TopicConfigurations": [
                    {
                        "Id": EVENTS_CONFIGURATION_ID,
                        "TopicArn": topic,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}},
                    }
                ]
            },
        )
        protocol = endpoint.split("://", 1)[0]
        subscription = sns.subscribe(
            TopicArn=topic, Protocol=protocol, Endpoint=endpoint, ReturnSubscriptionArn=True
        )["SubscriptionArn"]
        return topic, subscription

    def app(self, topics: SnsTopics | None = None) -> Any:
        """moto's S3 WSGI app behind the POST-policy check, the event notifications and
        (with `topics`) the sandbox's SNS."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        moto_app: Any = DomainDispatcherApplication(create_backend_app)
        if topics is not None:
            moto_app = S3EventNotifications(moto_app, topics)
        app: Any = PostPolicyCheck(moto_app, {self.access_key_id: self.secret_access_key})
        return SnsApi(app, topics) if topics is not None else app

    def run_in_thread(self) -> S3Server:
        """Serve in a thread of this process, bucket created; stop with `.stop()` or `with`."""
        return S3Server(self).start()


class S3Server:
    """A sandbox served by werkzeug in a daemon thread."""

    def __init__(self, sandbox: S3Sandbox) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass  # every request would go to stderr; the tests and /sandbox show them

        self.sandbox = sandbox
        self.topics = SnsTopics(sandbox.signing_key, sandbox.region)
        self._server = make_server(
            sandbox.host,
            sandbox.port,
            sandbox.app(self.topics),
            threaded=True,
            request_handler=QuietHandler,
        )
        sandbox.port = int(self._server.server_address[1])
        self.topics.base = sandbox.endpoint_url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> S3Server:
        self._thread.start()
        self.sandbox.ensure_bucket()
        if self.sandbox.events_url is not None:
            self.sandbox.subscribe_events(self.sandbox.events_url)
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)
        self.topics.close()

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> S3Sandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real bucket, or none).
    It notifies Relay's `/webhooks/s3` of uploads, signing with a key kept in DATA_DIR."""
    if not wanted(settings):
        return None
    return S3Sandbox(
        events_url=f"http://127.0.0.1:{settings.api_port}/webhooks/s3",
        key_file=settings.data_dir / SNS_KEY_FILE_NAME,
    )


def describe(settings: Settings, sandbox: S3Sandbox | None) -> str:
    """The banner's line for S3."""
    if sandbox is not None:
        events = ", upload events to /webhooks/s3" if sandbox.events_url else ""
        return f"sandboxed (moto S3 at {sandbox.endpoint_url}, bucket {sandbox.bucket}{events})"
    if settings.s3_bucket is not None:
        where = settings.s3_endpoint_url or f"AWS {settings.aws_region or 'default region'}"
        return f"real (bucket {settings.s3_bucket} at {where})"
    return "not configured (set S3_BUCKET, or SANDBOX=auto in development)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m relay.sandbox.s3", description="Relay's local S3 (moto) sandbox."
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--bucket", default=SANDBOX_BUCKET)
    parser.add_argument("--region", default=SANDBOX_REGION)
    parser.add_argument("--access-key-id", default=SANDBOX_ACCESS_KEY_ID)
    parser.add_argument("--secret-access-key", default=SANDBOX_SECRET_ACCESS_KEY)
    parser.add_argument("--sns-key-file", type=Path, help="the SNS signing key and certificate")
    parser.add_argument("--events-url", help="subscribe this URL to the bucket's upload events")
    args = parser.parse_args(argv)
    sandbox = S3Sandbox(
        port=args.port,
        host=args.host,
        bucket=args.bucket,
        region=args.region,
        access_key_id=args.access_key_id,
        secret_access_key=args.secret_access_key,
        events_url=args.events_url,
        key_file=args.sns_key_file,
    )
    server = sandbox.run_in_thread()
    print(f"S3 sandbox (moto) at {sandbox.endpoint_url}, bucket {sandbox.bucket}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
