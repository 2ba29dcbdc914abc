"""The image work as pure functions (relay.files.images), the key layout, and signed URLs."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from PIL import Image

from relay.files import storage
from relay.files.contracts import FileKind, FileView, RejectReason
from relay.files.images import ImageRejected, identify, process_image
from relay.files.layout import possible_rendition_keys, safe_filename
from relay.settings import Settings
from tests.files import samples

SIZES = [64, 128, 256, 512]


@pytest.fixture(autouse=True)
def pillow_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker built earlier in this process set Pillow's global guard to its setting."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50_000_000)


def run(data: bytes, declared: str, name: str = "a.jpg", **options: object) -> object:
    with ThreadPoolExecutor(2) as pool:
        return process_image(
            data,
            filename=name,
            declared_type=declared,
            sizes=SIZES,
            max_pixels=int(options.pop("max_pixels", 50_000_000)),  # type: ignore[call-overload]
            pool=pool,
            **options,  # type: ignore[arg-type]
        )


def test_a_large_jpeg_is_drafted_and_every_rendition_fits_its_box() -> None:
    data = samples.jpeg_with_exif(3000, 2000, orientation=1, gps=True)
    report = run(data, "image/jpeg")
    assert report.metadata["width"] == 3000 and report.metadata["height"] == 2000  # type: ignore[attr-defined]
    sizes = {r.name: (r.width, r.height) for r in report.renditions}  # type: ignore[attr-defined]
    assert sizes["compressed-a.jpg"] == (1600, 1067)
    for size in SIZES:
        width, height = sizes[f"thumb-{size}-a.jpg"]
        assert width == size and abs(width / height - 1.5) < 0.02
    for rendition in report.renditions:  # type: ignore[attr-defined]
        with Image.open(io.BytesIO(rendition.data)) as image:
            assert image.size == (rendition.width, rendition.height)
            assert not image.getexif()  # no EXIF at all: no GPS, no camera serials


def test_a_small_image_is_never_enlarged() -> None:
    report = run(samples.webp(40, 20), "image/webp", "tiny.webp")
    assert {(r.width, r.height) for r in report.renditions} == {(40, 20)}  # type: ignore[attr-defined]


def test_a_gif_gets_png_thumbnails_named_apart() -> None:
    out = io.BytesIO()
    Image.new("P", (100, 50), 3).save(out, "GIF")
    report = run(out.getvalue(), "image/gif", "anim.gif")
    names = sorted(r.name for r in report.renditions)  # type: ignore[attr-defined]
    assert "thumb-64-anim.gif.png" in names and "compressed-anim.gif.jpg" in names


@pytest.mark.parametrize(
    ("data", "declared", "reason"),
    [
        (samples.NOT_AN_IMAGE, "image/png", RejectReason.NOT_AN_IMAGE),
        (samples.truncated_jpeg(), "image/jpeg", RejectReason.TRUNCATED_IMAGE),
        (samples.png_with_transparency(), "image/jpeg", RejectReason.TYPE_MISMATCH),
        (samples.png_bomb(3000, 3000), "image/png", RejectReason.TOO_MANY_PIXELS),
    ],
)
def test_rejections_name_their_reason(data: bytes, declared: str, reason: RejectReason) -> None:
    with pytest.raises(ImageRejected) as rejected:
        run(data, declared, max_pixels=1_000_000)
    assert rejected.value.reason == reason


def test_identify_reads_the_bytes_not_the_name() -> None:
    assert identify(samples.webp()) == "image/webp"
    assert identify(samples.png_with_transparency()) == "image/png"
    assert identify(samples.NOT_AN_IMAGE) is None


def test_filenames_are_made_safe() -> None:
    assert safe_filename("../../etc/passwd") == "passwd"
    assert safe_filename("C:\\Users\\me\\Été photo (1).JPG") == "Ete-photo-1-.JPG"
    assert safe_filename(".htaccess") == "htaccess"
    assert safe_filename("???") == "file"
    assert len(safe_filename("a" * 500 + ".png")) == 200


def test_a_cleanup_names_every_key_a_rendition_could_have() -> None:
    view = FileView(
        id="file_1",
        kind=FileKind.ATTACHMENT,
        filename="a.gif",
        content_type="image/gif",
        declared_size=1,
        user_id="u",
        conversation_id="c",
        message_id="m",
    )
    keys = possible_rendition_keys(view, [64])
    assert "thumbnails/m/thumb-64-a.gif.png" in keys
    assert "thumbnails/m/compressed-a.gif.jpg" in keys
    assert "thumbnails/m/compressed-a.gif.webp" in keys


def test_cloudfront_urls_are_signed_with_the_key_pair(
    make_settings: Callable[..., Settings],
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    settings = make_settings(
        s3_bucket="b",
        cloudfront_domain="cdn.example.com",
        cloudfront_key_pair_id="K2JCJMDEHXQW5F",
        cloudfront_private_key=base64.b64encode(pem.encode()).decode(),
        file_url_ttl="10m",
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    url = storage.download_url(None, settings, "thumbnails/m/thumb-64-a b.jpg", now=now)
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == (
        "https",
        "cdn.example.com",
        "/thumbnails/m/thumb-64-a%20b.jpg",
    )
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert query["Key-Pair-Id"] == "K2JCJMDEHXQW5F"
    expires = int(query["Expires"])
    assert expires == int(now.timestamp()) + 600
    resource = url.split("?")[0]
    policy = (
        f'{{"Statement":[{{"Resource":"{resource}",'
        f'"Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}'
    )
    signature = base64.b64decode(
        query["Signature"].replace("-", "+").replace("_", "=").replace("~", "/")
    )
    key.public_key().verify(signature, policy.encode(), padding.PKCS1v15(), hashes.SHA1())  # noqa: S303
