"""The bucket: one boto3 S3 client configured from settings, presigned uploads and
downloads, CloudFront signed URLs.

Signing is local (no network call), so the API signs its URLs itself; every read and
write of objects happens in the file workflow's activities. S3_ENDPOINT_URL points the
same client at moto's server in the sandbox and the tests (one code path); with the AWS
keys unset boto3 finds credentials itself (an IAM role).
"""

from __future__ import annotations

import base64
import functools
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.errors import ErrorCode, RelayError
from relay.settings import Settings


def configured(settings: Settings) -> bool:
    return settings.s3_bucket is not None


def bucket(settings: Settings) -> str:
    if settings.s3_bucket is None:
        raise RelayError(
            ErrorCode.PROVIDER_NOT_CONFIGURED,
            "S3_BUCKET is not set (or run `relay dev`, which starts an S3 sandbox)",
        )
    return settings.s3_bucket


def s3_client(settings: Settings, *, max_pool_connections: int = 10) -> Any:
    """The S3 client for these settings (see `make_s3_client`)."""
    secret = settings.aws_secret_access_key
    return make_s3_client(
        endpoint_url=settings.s3_endpoint_url,
        region=settings.aws_region,
        access_key_id=settings.aws_access_key_id,
        secret_access_key=secret.get_secret_value() if secret else None,
        max_pool_connections=max_pool_connections,
    )


def make_s3_client(
    *,
    endpoint_url: str | None,
    region: str | None,
    access_key_id: str | None,
    secret_access_key: str | None,
    max_pool_connections: int = 10,
) -> Any:
    """A boto3 S3 client: SigV4, path-style when an endpoint is set (as local servers
    need), no retries inside (Temporal retries the activity)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=region,
        aws_access_key_id=access_key_id,
        aws_secret_access_key=secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"max_attempts": 1, "mode": "standard"},
            max_pool_connections=max_pool_connections,
            connect_timeout=10,
            read_timeout=60,
        ),
    )


def presigned_upload(
    client: Any,
    settings: Settings,
    *,
    key: str,
    content_type: str,
    size: int,
    expires_in: timedelta,
) -> dict[str, Any]:
    """A presigned POST whose policy admits exactly `size` bytes of `content_type` at
    `key`, until `expires_in` from now (S3 refuses anything else)."""
    return client.generate_presigned_post(  # type: ignore[no-any-return]
        Bucket=bucket(settings),
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[{"Content-Type": content_type}, ["content-length-range", size, size]],
        ExpiresIn=int(expires_in.total_seconds()),
    )


def cloudfront_enabled(settings: Settings) -> bool:
    return bool(
        settings.cloudfront_domain
        and settings.cloudfront_key_pair_id
        and settings.cloudfront_private_key
    )


@functools.lru_cache(maxsize=4)
def _rsa_signer(pem: str) -> Any:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    key = serialization.load_pem_private_key(_pem_bytes(pem), password=None)

    def sign(message: bytes) -> bytes:
        # CloudFront's canned policies are signed RSA-SHA1 (its documented scheme).
        return key.sign(message, padding.PKCS1v15(), hashes.SHA1())  # type: ignore[union-attr,call-arg,arg-type]  # noqa: S303

    return sign


def _pem_bytes(value: str) -> bytes:
    """CLOUDFRONT_PRIVATE_KEY as PEM, or base64 of the PEM (one line in an env file)."""
    if "-----BEGIN" in value:
        return value.replace("\\n", "\n").encode()
    return base64.b64decode(value)


def download_url(client: Any, settings: Settings, key: str, *, now: datetime | None = None) -> str:
    """A URL for one object, valid FILE_URL_TTL: CloudFront signed (botocore's
    CloudFrontSigner) when CLOUDFRONT_DOMAIN and a key pair are set, else presigned S3."""
    ttl = settings.file_url_ttl
    if cloudfront_enabled(settings):
        from urllib.parse import quote

        from botocore.signers import CloudFrontSigner

        assert settings.cloudfront_private_key is not None
        assert settings.cloudfront_key_pair_id is not None
        signer = CloudFrontSigner(
            settings.cloudfront_key_pair_id,
            _rsa_signer(settings.cloudfront_private_key.get_secret_value()),
        )
        domain = str(settings.cloudfront_domain).removeprefix("https://").rstrip("/")
        expires = (now or datetime.now(UTC)) + ttl
        return signer.generate_presigned_url(  # type: ignore[no-any-return]
            f"https://{domain}/{quote(key)}", date_less_than=expires
        )
    return client.generate_presigned_url(  # type: ignore[no-any-return]
        "get_object",
        Params={"Bucket": bucket(settings), "Key": key},
        ExpiresIn=int(ttl.total_seconds()),
    )
