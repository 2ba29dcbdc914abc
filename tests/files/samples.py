"""Images made in the tests: real encoder output, EXIF and GPS written by Pillow."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg_with_exif(
    width: int = 640, height: int = 480, *, orientation: int = 6, gps: bool = True
) -> bytes:
    """A JPEG stored `width`x`height`, EXIF orientation `orientation` (6: rotate 90° to
    display), camera make/model and, with `gps`, a GPS position."""
    image = Image.new("RGB", (width, height), (200, 30, 30))
    # A marker in the top-left corner, to check which way the renditions stand.
    for x in range(width // 4):
        for y in range(height // 8):
            image.putpixel((x, y), (20, 20, 220))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[0x010F] = "RelayCam"
    exif[0x0110] = "Model 7"
    if gps:
        exif[GPS_IFD] = {1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif)
    return out.getvalue()


def png_with_transparency(width: int = 300, height: int = 200) -> bytes:
    image = Image.new("RGBA", (width, height), (0, 128, 0, 0))
    for x in range(width // 2):
        for y in range(height):
            image.putpixel((x, y), (0, 128, 0, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def webp(width: int = 400, height: int = 400) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 10)).save(out, "WEBP", quality=80)
    return out.getvalue()


def truncated_jpeg() -> bytes:
    whole = jpeg_with_exif(800, 600, gps=False)
    return whole[: len(whole) // 2]


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid PNG header and one IDAT of zeros: a few KB that would decode to
    width*height pixels (written by hand so the test does not allocate them)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    compressor = zlib.compressobj(9)
    row = b"\x00" * (width + 1)
    raw = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


NOT_AN_IMAGE = b"%PDF-1.4\n% not an image at all\n" + b"0" * 200
