"""Image work, as pure functions over bytes: identify, check, render, describe (Pillow).

`process_image` is what the file workflow's activity runs, off the event loop:

- The real type comes from the bytes (Pillow's own identification, only the formats in
  `FORMATS`), never from the declared content type; a declared image that is not one, or
  is another type, is refused.
- Pixels are counted from the header, before anything is decoded: past `max_pixels` the
  image is refused (a decompression bomb: a few KB that would decode to gigabytes).
  `Image.MAX_IMAGE_PIXELS` is set to the same limit by the worker as a second guard.
- JPEGs are decoded in draft mode (libjpeg's DCT scaling, 1/2, 1/4 or 1/8) at the smallest
  scale still at least as large as the largest rendition, then each rendition is resized
  from the next larger one (compressed → 512 → 256 → …) and encoded on the pool while the
  next is resized. A truncated or corrupt image fails to decode and is refused.
- EXIF orientation is applied (`ImageOps.exif_transpose`), so every rendition stands
  upright; renditions carry no EXIF, XMP or other metadata block (so no GPS position),
  only the ICC colour profile. The original is never re-encoded: it is kept byte for byte.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from relay.files.contracts import RejectReason
from relay.files.layout import compressed_name, thumbnail_name

# The formats Relay decodes; anything else is not an image to it (a smaller attack surface).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
# Thumbnails keep these formats (and the original's file name); others become PNG.
KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
# The compressed rendition: the longest side at most this, JPEG (WebP when transparent).
COMPRESSED_MAX_SIDE = 1600
JPEG_QUALITY = 80
WEBP_QUALITY = 80
THUMBNAIL_JPEG_QUALITY = 85
# Declared types that name the same format as Pillow's MIME type.
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
_ORIENTATION, _MAKE, _MODEL, _GPS, _DATETIME_ORIGINAL, _EXIF_IFD = (
    0x0112,
    0x010F,
    0x0110,
    0x8825,
    0x9003,
    0x8769,
)
_SWAPPED = {5, 6, 7, 8}


class ImageRejected(Exception):
    """The bytes are not an image Relay accepts; `reason` names why."""

    def __init__(self, reason: RejectReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class Rendered:
    name: str
    width: int
    height: int
    data: bytes
    content_type: str


@dataclass
class ImageReport:
    mime: str
    metadata: dict[str, Any]
    renditions: list[Rendered] = field(default_factory=list)


def normalized_type(content_type: str) -> str:
    base = content_type.split(";", 1)[0].strip().lower()
    return _ALIASES.get(base, base)


def is_image_type(content_type: str) -> bool:
    return normalized_type(content_type).startswith("image/")


def identify(data: bytes) -> str | None:
    """The MIME type Pillow identifies in `data` (header only), or None."""
    try:
        with Image.open(io.BytesIO(data), formats=FORMATS) as image:
            return Image.MIME.get(image.format or "")
    except Image.DecompressionBombError:
        return None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    return value.strip("\x00 ").strip() or None


def _fit(width: int, height: int, longest: int) -> tuple[int, int]:
    """The size that fits (width, height) into a `longest` square, never larger."""
    scale = min(1.0, longest / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _encode(image: Image.Image, format: str, icc: bytes | None, quality: int) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"exif": b""}
    if icc:
        options["icc_profile"] = icc
    if format == "JPEG":
        options |= {"quality": quality, "optimize": True}
    elif format == "WEBP":
        options |= {"quality": quality, "method": 4}
    image.save(out, format=format, **options)
    return out.getvalue()


def _run(pool: Executor | None, call: Callable[[], bytes]) -> Future[bytes]:
    if pool is not None:
        return pool.submit(call)
    done: Future[bytes] = Future()
    done.set_result(call())
    return done


def process_image(
    data: bytes,
    *,
    filename: str,
    declared_type: str,
    sizes: list[int],
    max_pixels: int,
    compressed_max_side: int = COMPRESSED_MAX_SIDE,
    pool: Executor | None = None,
) -> ImageReport:
    """Check `data` and render its thumbnails (`thumb-{size}-{filename}`, longest side
    `size`, never enlarged) and its compressed rendition; raise `ImageRejected`.
    Encodings run on `pool` when given."""
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageRejected(RejectReason.TOO_MANY_PIXELS, str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected(
            RejectReason.NOT_AN_IMAGE, "the bytes are not an image Relay reads"
        ) from None
    with image:
        format = image.format or ""
        mime = Image.MIME.get(format, "application/octet-stream")
        if normalized_type(declared_type) != mime:
            raise ImageRejected(
                RejectReason.TYPE_MISMATCH, f"declared {declared_type}, the bytes are {mime}"
            )
        width, height = image.size
        if width * height > max_pixels:
            raise ImageRejected(
                RejectReason.TOO_MANY_PIXELS,
                f"{width}x{height} is {width * height} pixels; the limit is {max_pixels}",
            )
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION)
        has_gps = bool(exif.get_ifd(_GPS)) or _GPS in exif
        taken = _text(exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL))
        frames = int(getattr(image, "n_frames", 1) or 1)
        largest = min(max(compressed_max_side, *sizes), max(width, height))
        if format == "JPEG":
            # Decode only as many pixels as the largest rendition needs.
            image.draft(
                image.mode if image.mode in ("RGB", "L") else None, _fit(width, height, largest)
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image) or image
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageRejected(
                RejectReason.TRUNCATED_IMAGE, f"the image does not decode: {exc}"
            ) from None
    icc = upright.info.get("icc_profile")
    alpha = _has_alpha(upright)
    working = upright.convert("RGBA" if alpha else "RGB")
    working.info = {}  # no EXIF, XMP or comments: nothing personal in a rendition
    display_w, display_h = (height, width) if orientation in _SWAPPED else (width, height)

    renditions: list[tuple[str, int, int, str, Future[bytes]]] = []
    compressed_format = "WEBP" if alpha else "JPEG"
    compressed_ext = "webp" if alpha else "jpg"
    source = working
    target = _fit(display_w, display_h, compressed_max_side)
    if source.size != target:
        source = source.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
    compressed = source
    renditions.append(
        (
            compressed_name(filename, compressed_ext),
            *compressed.size,
            compressed_format,
            _run(
                pool,
                lambda: _encode(
                    compressed,
                    compressed_format,
                    icc,
                    WEBP_QUALITY if alpha else JPEG_QUALITY,
                ),
            ),
        )
    )
    kept_ext = KEPT_FORMATS.get(format)
    thumb_format = format if kept_ext else "PNG"
    if thumb_format == "JPEG" and alpha:
        thumb_format = "PNG"
    # Largest first, each resized from the one before (or the compressed rendition).
    for size in sorted(sizes, reverse=True):
        target = _fit(display_w, display_h, size)
        if source.size[0] < target[0] or source.size[1] < target[1]:
            source = working  # the compressed rendition is smaller than this thumbnail
        thumb = (
            source
            if source.size == target
            else source.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        )
        source = thumb
        extension = KEPT_FORMATS[thumb_format]
        renditions.append(
            (
                thumbnail_name(size, filename, extension),
                *thumb.size,
                thumb_format,
                _run(
                    pool,
                    lambda thumb=thumb: _encode(  # type: ignore[misc]
                        thumb, thumb_format, icc, THUMBNAIL_JPEG_QUALITY
                    ),
                ),
            )
        )
    metadata: dict[str, Any] = {
        "width": display_w,
        "height": display_h,
        "format": format,
        "orientation": orientation,
        "cameraMake": _text(exif.get(_MAKE)),
        "cameraModel": _text(exif.get(_MODEL)),
        "takenAt": taken,
        "hasAlpha": alpha,
        "frames": frames,
        "gpsStripped": has_gps,
    }
    return ImageReport(
        mime=mime,
        metadata=metadata,
        renditions=[
            Rendered(name, w, h, future.result(), Image.MIME[fmt])
            for name, w, h, fmt, future in renditions
        ],
    )
