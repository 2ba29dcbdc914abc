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
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape

from relay.errors import ConfigError
from relay.settings import Settings

# Credentials the sandbox accepts and signs with; like localstripe's test key, they open
# nothing but this local server.
SANDBOX_ACCESS_KEY_ID = "relay-sandbox"
SANDBOX_SECRET_ACCESS_KEY = "relay-sandbox-secret"  # noqa: S105 - a local sandbox's credential
SANDBOX_BUCKET = "relay-dev"
SANDBOX_REGION = "us-east-1"
READY_SECONDS = 30
# Form fields S3 does not require a policy condition for.
_UNCHECKED_FIELDS = frozenset({"policy", "x-amz-signature", "file", "awsaccesskeyid", "signature"})
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
        return self.app(environ, start_response)


# --- the sandbox -----------------------------------------------------------------------------


@dataclass
class S3Sandbox:
    """One S3 sandbox server: its command, the settings that point Relay at it, its
    bucket's creation, and a way to run it in this process (tests; `port=0` binds a free
    port)."""

    port: int = field(default_factory=_free_port)
    bucket: str = SANDBOX_BUCKET
    region: str = SANDBOX_REGION
    access_key_id: str = SANDBOX_ACCESS_KEY_ID
    secret_access_key: str = SANDBOX_SECRET_ACCESS_KEY
    host: str = "127.0.0.1"

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The command line (the default secret is not repeated on it)."""
        command = [sys.executable, "-m", "relay.sandbox.s3", "--port", str(self.port)]
        command += ["--host", self.host, "--bucket", self.bucket, "--region", self.region]
        command += ["--access-key-id", self.access_key_id]
        if self.secret_access_key != SANDBOX_SECRET_ACCESS_KEY:
            command += ["--secret-access-key", self.secret_access_key]
        return command

    def environment(self) -> dict[str, str]:
        """The settings (as environment variables) that point Relay's S3 code here."""
        return {
            "S3_BUCKET": self.bucket,
            "S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key_id,
            "AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

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

    def client(self) -> Any:
        """A boto3 S3 client for this server (path-style, the sandbox's credentials)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
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

    def app(self) -> Any:
        """moto's S3 WSGI app behind the POST-policy check."""
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        moto_app = DomainDispatcherApplication(create_backend_app)
        return PostPolicyCheck(moto_app, {self.access_key_id: self.secret_access_key})

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
        self._server = make_server(
            sandbox.host, sandbox.port, sandbox.app(), threaded=True, request_handler=QuietHandler
        )
        sandbox.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> S3Server:
        self._thread.start()
        self.sandbox.ensure_bucket()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def plan(settings: Settings) -> S3Sandbox | None:
    """The sandbox `relay dev` runs for these settings, or None (a real bucket, or none)."""
    return S3Sandbox() if wanted(settings) else None


def describe(settings: Settings, sandbox: S3Sandbox | None) -> str:
    """The banner's line for S3."""
    if sandbox is not None:
        return f"sandboxed (moto S3 at {sandbox.endpoint_url}, bucket {sandbox.bucket})"
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
    args = parser.parse_args(argv)
    sandbox = S3Sandbox(
        port=args.port,
        host=args.host,
        bucket=args.bucket,
        region=args.region,
        access_key_id=args.access_key_id,
        secret_access_key=args.secret_access_key,
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
