"""SNS message verification (relay.files.sns) against messages signed here as SNS signs
them: with the certificate pinned as the S3 sandbox's (S3_EVENTS_SANDBOX_CERTIFICATE, a
loopback SigningCertURL), and fetched from SNS's host (through an httpx transport that
answers for it)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from relay.errors import ErrorCode, RelayError
from relay.files import sns
from relay.sandbox.sns import SigningKey, SnsSigner
from relay.settings import Settings
from tests.files.sns_signer import LoopbackSns, s3_record

TOPIC = "arn:aws:sns:us-east-1:123456789012:relay-uploads"


SNS_CERT_URL = "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"


@pytest.fixture
def signer() -> Iterator[LoopbackSns]:
    with LoopbackSns() as running:
        yield running


def sandbox_settings(make_settings: Callable[..., Settings], pem: str, **more: object) -> Settings:
    # The S3 sandbox on loopback, outside production, its certificate pinned.
    values: dict[str, object] = {
        "s3_events_topic_arns": TOPIC,
        "s3_bucket": "b",
        "s3_endpoint_url": "http://127.0.0.1:9",
        "s3_events_sandbox_certificate": pem,
    }
    return make_settings(**(values | more))


@pytest.fixture
def settings(make_settings: Callable[..., Settings], signer: LoopbackSns) -> Settings:
    return sandbox_settings(make_settings, signer.pem)


class SnsHost(httpx.AsyncBaseTransport):
    """Answers for sns.<region>.amazonaws.com with one certificate, counting fetches."""

    def __init__(self, pem: str) -> None:
        self.pem = pem
        self.fetched: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.fetched.append(str(request.url))
        return httpx.Response(200, content=self.pem.encode())


def body(message: dict[str, str]) -> bytes:
    return json.dumps(message).encode()


async def refused(message: dict[str, str], settings: Settings) -> RelayError:
    with pytest.raises(RelayError) as caught:
        await sns.verify(sns.parse(body(message)), settings, sns.CertificateCache())
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
    return caught.value


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_notification_signed_as_sns_signs_verifies(
    signer: LoopbackSns, settings: Settings, version: str
) -> None:
    message = signer.notification(TOPIC, [s3_record("b", "temp/file_1/a.jpg")], version=version)
    await sns.verify(sns.parse(body(message)), settings, sns.CertificateCache())
    # The pinned certificate: whatever serves the loopback URL is never asked.
    assert signer.certificate_fetches == 0


@pytest.mark.parametrize("version", ["1", "2"])
async def test_a_certificate_on_snss_host_is_fetched_once_and_verifies(
    signer: LoopbackSns, make_settings: Callable[..., Settings], version: str
) -> None:
    # Real S3: no sandbox, nothing pinned; the certificate comes from SNS's host.
    real = make_settings(s3_events_topic_arns=TOPIC, s3_bucket="b")
    host = SnsHost(signer.pem)
    cache = sns.CertificateCache(transport=host)
    records = [s3_record("b", "temp/file_1/a.jpg")]
    message = signer.sign(
        {**signer.notification(TOPIC, records), "SigningCertURL": SNS_CERT_URL}, version
    )
    await sns.verify(sns.parse(body(message)), real, cache)
    # Cached: a second message signed with the same certificate fetches nothing.
    await sns.verify(sns.parse(body(message)), real, cache)
    assert host.fetched == [SNS_CERT_URL]
    # Signed by another key, claiming that certificate: refused.
    other = SnsSigner(SigningKey.generate(), signer.base).sign(
        {**message, "SigningCertURL": SNS_CERT_URL}
    )
    with pytest.raises(RelayError):
        await sns.verify(sns.parse(body(other)), real, cache)


async def test_a_notification_without_subject_verifies(
    signer: LoopbackSns, settings: Settings
) -> None:
    message = signer.notification(TOPIC, [])
    message.pop("Subject")
    await sns.verify(sns.parse(body(signer.sign(message))), settings, sns.CertificateCache())


async def test_a_confirmation_verifies(signer: LoopbackSns, settings: Settings) -> None:
    message = signer.confirmation(TOPIC, "token-1")
    await sns.verify(sns.parse(body(message)), settings, sns.CertificateCache())


async def test_a_changed_field_or_another_key_does_not_verify(
    signer: LoopbackSns, settings: Settings
) -> None:
    message = signer.notification(TOPIC, [s3_record("b", "temp/file_1/a.jpg")])
    tampered = {**message, "Message": message["Message"].replace("file_1", "file_2")}
    await refused(tampered, settings)
    # Signed as version 2, claimed as version 1.
    await refused({**message, "SignatureVersion": "1"}, settings)
    await refused({**message, "SignatureVersion": "3"}, settings)
    await refused({**message, "Signature": "not base64!"}, settings)
    # Another key, whatever certificate URL it names: the pinned certificate decides.
    forged = SnsSigner(SigningKey.generate(), signer.base).sign(
        {**message, "SigningCertURL": signer.cert_url}
    )
    await refused(forged, settings)
    assert signer.certificate_fetches == 0


async def test_a_topic_not_allowed_is_refused_before_anything_is_fetched(
    signer: LoopbackSns, make_settings: Callable[..., Settings]
) -> None:
    other = "arn:aws:sns:us-east-1:123456789012:someone-else"
    host = SnsHost(signer.pem)
    message = signer.sign({**signer.notification(other, []), "SigningCertURL": SNS_CERT_URL})
    with pytest.raises(RelayError) as caught:
        real = make_settings(s3_events_topic_arns=TOPIC)
        await sns.verify(sns.parse(body(message)), real, sns.CertificateCache(transport=host))
    assert "S3_EVENTS_TOPIC_ARNS" in caught.value.message
    assert host.fetched == []


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


def test_loopback_is_trusted_only_with_the_pinned_sandbox_certificate_outside_production(
    make_settings: Callable[..., Settings], signer: LoopbackSns
) -> None:
    url = "http://127.0.0.1:8123/SimpleNotificationService-x.pem"
    assert sns.trusted_sns_url(url, sandbox_settings(make_settings, signer.pem), certificate=True)
    # No certificate pinned: the sandbox in use is not enough.
    unpinned = sandbox_settings(make_settings, signer.pem, s3_events_sandbox_certificate=None)
    assert not sns.trusted_sns_url(url, unpinned, certificate=True)
    # Real S3, or SANDBOX=off: the pinned certificate is not trusted.
    real_s3 = sandbox_settings(make_settings, signer.pem, s3_endpoint_url=None)
    assert not sns.trusted_sns_url(url, real_s3, certificate=True)
    remote = sandbox_settings(make_settings, signer.pem, s3_endpoint_url="http://10.0.0.5:9")
    assert not sns.trusted_sns_url(url, remote, certificate=True)
    off = sandbox_settings(make_settings, signer.pem, sandbox="off")
    assert not sns.trusted_sns_url(url, off, certificate=True)
    # Production ignores it whatever S3_ENDPOINT_URL says (and refuses to start with it).
    production = Settings.model_construct(
        relay_env="production",
        sandbox="auto",
        s3_endpoint_url="http://127.0.0.1:9",
        s3_events_sandbox_certificate=signer.pem,
    )
    assert sns.sandbox_certificate(production) is None
    assert not sns.trusted_sns_url(url, production, certificate=True)
    # Never a remote host, even pinned.
    pinned = sandbox_settings(make_settings, signer.pem)
    assert not sns.trusted_sns_url("http://example.com/x.pem", pinned, certificate=True)


async def test_a_certificate_url_off_sns_is_refused_without_fetching(
    signer: LoopbackSns, make_settings: Callable[..., Settings]
) -> None:
    # Against real S3 (no sandbox), the loopback certificate is not trusted.
    real = make_settings(s3_events_topic_arns=TOPIC, s3_bucket="b")
    error = await refused(signer.notification(TOPIC, []), real)
    assert "SigningCertURL" in error.message
    assert signer.certificate_fetches == 0


async def test_the_pinned_certificate_may_be_base64_and_a_bad_one_refuses(
    signer: LoopbackSns, make_settings: Callable[..., Settings]
) -> None:
    message = signer.notification(TOPIC, [])
    one_line = base64.b64encode(signer.pem.encode()).decode()
    await sns.verify(
        sns.parse(body(message)),
        sandbox_settings(make_settings, one_line),
        sns.CertificateCache(),
    )
    error = await refused(message, sandbox_settings(make_settings, "not a certificate"))
    assert "S3_EVENTS_SANDBOX_CERTIFICATE" in error.message


async def test_a_loopback_subscribe_url_is_confirmed_only_for_the_sandboxs_message(
    signer: LoopbackSns, settings: Settings
) -> None:
    confirmation = signer.confirmation(TOPIC, "token-1")
    await sns.confirm_subscription(sns.parse(body(confirmation)), settings)
    assert len(signer.confirmations) == 1
    # Signed with a certificate from SNS's host, a loopback SubscribeURL is not followed.
    from_sns = signer.sign({**confirmation, "SigningCertURL": SNS_CERT_URL})
    with pytest.raises(RelayError) as caught:
        await sns.confirm_subscription(sns.parse(body(from_sns)), settings)
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
    assert len(signer.confirmations) == 1


@pytest.mark.parametrize(
    "raw",
    [b"", b"not json", b"[]", b'{"Type": "Other"}', b'{"Type": "Notification"}'],
)
def test_what_is_not_an_sns_message_is_refused(raw: bytes) -> None:
    with pytest.raises(RelayError) as caught:
        sns.parse(raw)
    assert caught.value.code == ErrorCode.INVALID_SIGNATURE
