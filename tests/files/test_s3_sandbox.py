"""The S3 sandbox: moto's server, with S3's own POST-policy check, planned by `relay dev`
only when no bucket is configured."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest

from relay.files import storage
from relay.sandbox import s3 as s3_sandbox
from relay.sandbox.s3 import PolicyRefused, S3Sandbox, check_post_policy
from relay.settings import Settings
from tests.files.conftest import bucket_keys, s3_settings


def test_relay_dev_plans_the_sandbox_only_for_development_without_a_bucket(
    make_settings: Callable[..., Settings],
) -> None:
    development = make_settings(relay_env="development")
    sandbox = s3_sandbox.plan(development)
    assert sandbox is not None
    env = sandbox.environment()
    assert env["S3_ENDPOINT_URL"] == f"http://127.0.0.1:{sandbox.port}"
    assert set(env) == {
        "S3_BUCKET",
        "S3_ENDPOINT_URL",
        "AWS_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        # Its upload events: the topic Relay accepts, the certificate it pins.
        "S3_EVENTS_TOPIC_ARNS",
        "S3_EVENTS_SANDBOX_CERTIFICATE",
    }
    assert "moto S3" in s3_sandbox.describe(development, sandbox)
    assert sandbox.command()[1:3] == ["-m", "relay.sandbox.s3"]
    with_bucket = make_settings(relay_env="development", s3_bucket="prod-bucket")
    assert s3_sandbox.plan(with_bucket) is None
    assert s3_sandbox.describe(with_bucket, None).startswith("real (bucket prod-bucket")
    assert s3_sandbox.plan(make_settings(relay_env="development", sandbox="off")) is None
    assert s3_sandbox.plan(make_settings(relay_env="test")) is None


def test_the_bucket_allows_browser_uploads(s3: S3Sandbox) -> None:
    rules = s3.client().get_bucket_cors(Bucket=s3.bucket)["CORSRules"]
    assert "POST" in rules[0]["AllowedMethods"] and rules[0]["AllowedOrigins"] == ["*"]
    preflight = httpx.options(
        f"{s3.endpoint_url}/{s3.bucket}",
        headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers.get("Access-Control-Allow-Origin") in {"*", "http://localhost:3000"}


def test_an_upload_url_used_after_expiry_is_refused(
    s3: S3Sandbox, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(**s3_settings(s3))
    client = storage.s3_client(settings)
    post = storage.presigned_upload(
        client,
        settings,
        key="temp/x/a.txt",
        content_type="text/plain",
        size=5,
        expires_in=timedelta(seconds=1),
    )
    time.sleep(2.1)
    answer = httpx.post(post["url"], data=post["fields"], files={"file": ("a", b"hello")})
    assert answer.status_code == 403
    assert "Policy expired" in answer.text
    assert bucket_keys(s3) == []


def test_a_tampered_or_unsigned_policy_is_refused(
    s3: S3Sandbox, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(**s3_settings(s3))
    post = storage.presigned_upload(
        storage.s3_client(settings),
        settings,
        key="temp/y/b.txt",
        content_type="text/plain",
        size=5,
        expires_in=timedelta(minutes=5),
    )
    fields = post["fields"]
    credentials = {s3.access_key_id: s3.secret_access_key}
    lowered = {name.lower(): value for name, value in fields.items()}
    check_post_policy(lowered, 5, bucket=s3.bucket, credentials=credentials)
    with pytest.raises(PolicyRefused, match="signature"):
        check_post_policy(
            {**lowered, "x-amz-signature": "0" * 64}, 5, bucket=s3.bucket, credentials=credentials
        )
    with pytest.raises(PolicyRefused, match="Extra input fields: acl"):
        check_post_policy(
            {**lowered, "acl": "public-read"}, 5, bucket=s3.bucket, credentials=credentials
        )
    with pytest.raises(PolicyRefused, match=r"\$key"):
        check_post_policy(
            {**lowered, "key": "avatars/other"}, 5, bucket=s3.bucket, credentials=credentials
        )
    with pytest.raises(PolicyRefused) as small:
        check_post_policy(lowered, 4, bucket=s3.bucket, credentials=credentials)
    assert small.value.code == "EntityTooSmall"
    unsigned = {k: v for k, v in lowered.items() if k != "policy"}
    with pytest.raises(PolicyRefused):
        check_post_policy(unsigned, 5, bucket=s3.bucket, credentials=credentials)
    # Accepted through the server, too.
    answer = httpx.post(post["url"], data=fields, files={"file": ("b", b"hello")})
    assert answer.status_code == 204
    assert bucket_keys(s3) == ["temp/y/b.txt"]
