"""SNS message verification (relay.files.sns) against messages signed here as SNS signs
them, the certificate served from a loopback HTTP server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from relay.errors import ErrorCode, RelayError
from relay.files import sns
from relay.settings import Settings
from tests.files.sns_signer import SnsSigner, s3_record

TOPIC = "arn:aws:sns:us-east-1:123456789012:relay-uploads"


@pytest.fixture
def signer() -> Iterator[SnsSigner]:
    with SnsSigner() as running:
        yield running


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    # The S3 sandbox on loopback, outside production: loopback SNS URLs are trusted.
    return make_settings(
        s3_events_topic_arns=TOPIC, s3_bucket="b", s3_endpoint_url="http://127.0.0.1:9"
    )


def body(message: dict[str, str]) -> bytes:
    return json.dumps(message).encode()


async def refused(message: dict[str, str], settings: Settings) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await sns.verify(sns.parse(body(message)), settings, sns.CertificateCache())
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
    return caught.value


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_notification_signed_as_sns_signs_verifies(
    signer: SnsSigner, settings: Settings, version: str
) -> None:
    message = signer.notification(TOPIC, [s3_record("b", "temp/file_1/a.jpg")], version=version)
    cache = sns.CertificateCache()
    await sns.verify(sns.parse(body(message)), settings, cache)
    # Cached: a second message signed with the same certificate fetches nothing.
    await sns.verify(sns.parse(body(message)), settings, cache)
    assert signer.certificate_fetches == 1


async def test_a_notification_without_subject_verifies(
    signer: SnsSigner, settings: Settings
) -> None:
    message = signer.notification(TOPIC, [])
    message.pop("Subject")
    await sns.verify(sns.parse(body(signer.sign(message))), settings, sns.CertificateCache())


async def test_a_confirmation_verifies(signer: SnsSigner, settings: Settings) -> None:
    message = signer.confirmation(TOPIC, "token-1")
    await sns.verify(sns.parse(body(message)), settings, sns.CertificateCache())


async def test_a_changed_field_or_another_key_does_not_verify(
    signer: SnsSigner, settings: Settings
) -> None:
    message = signer.notification(TOPIC, [s3_record("b", "temp/file_1/a.jpg")])
    tampered = {**message, "Message": message["Message"].replace("file_1", "file_2")}
    await refused(tampered, settings)
    # Signed as version 2, claimed as version 1.
    await refused({**message, "SignatureVersion": "1"}, settings)
    await refused({**message, "SignatureVersion": "3"}, settings)
    await refused({**message, "Signature": "not base64!"}, settings)
    with SnsSigner() as other:
        forged = other.sign({**message, "SigningCertURL": signer.cert_url})
    await refused(forged, settings)


async def test_a_topic_not_allowed_is_refused_before_anything_is_fetched(
    signer: SnsSigner, settings: Settings
) -> None:
    other = "arn:aws:sns:us-east-1:123456789012:someone-else"
    error = await refused(signer.notification(other, []), settings)
    assert "S3_EVENTS_TOPIC_ARNS" in error.message
    assert signer.certificate_fetches == 0


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/SimpleNotificationService-x.pem",
        "http://sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/SimpleNotificationService-x.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/x.pem",
        "https://sns.us-east-1.amazonaws.com/not-a-certificate.txt",
        "https://user@sns.us-east-1.amazonaws.com/SimpleNotificationService-x.pem",
    ],
)
def test_only_sns_hosts_serve_certificates(url: str, settings: Settings) -> None:
    assert not sns.trusted_sns_url(url, settings, certificate=True)


@pytest.mark.parametrize(
    "url",
    [
        "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
        "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
    ],
)
def test_sns_hosts_are_trusted(url: str, settings: Settings) -> None:
    assert sns.trusted_sns_url(url, settings, certificate=True)


def test_loopback_is_trusted_only_with_the_s3_sandbox_outside_production(
    make_settings: Callable[..., Settings],
) -> None:
    url = "http://127.0.0.1:8123/SimpleNotificationService-x.pem"
    sandbox = {"s3_bucket": "b", "s3_endpoint_url": "http://127.0.0.1:9"}
    assert sns.trusted_sns_url(url, make_settings(**sandbox), certificate=True)
    real_s3 = {"s3_bucket": "b", "s3_endpoint_url": None}
    assert not sns.trusted_sns_url(url, make_settings(**real_s3), certificate=True)
    off = make_settings(sandbox="off", **sandbox)
    assert not sns.trusted_sns_url(url, off, certificate=True)
    # Production refuses the sandbox whatever S3_ENDPOINT_URL says.
    production = Settings.model_construct(
        relay_env="production", sandbox="auto", s3_endpoint_url="http://127.0.0.1:9"
    )
    assert not sns.sandbox_in_use(production)


async def test_a_certificate_url_off_sns_is_refused_without_fetching(
    signer: SnsSigner, make_settings: Callable[..., Settings]
) -> None:
    # Against real S3 (no sandbox), the loopback certificate is not trusted.
    real = make_settings(s3_events_topic_arns=TOPIC, s3_bucket="b")
    error = await refused(signer.notification(TOPIC, []), real)
    assert "SigningCertURL" in error.message
    assert signer.certificate_fetches == 0


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"Type": "Other"}', b'{"Type": "Notification"}'],
)
def test_what_is_not_an_sns_message_is_refused(raw: bytes) -> None:
    with pytest.raises(RelayError) as caught:
        sns.parse(raw)
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
