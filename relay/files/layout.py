"""Where a file's objects live in the bucket (seed 000's layout), and safe filenames.

    temp/{uploadId}/{filename}                          the upload, until processed
    avatars/{userId}/{fileId}/{filename}                an avatar, byte for byte
    attachments/{conversationId}/{messageId}/{filename} an attachment, byte for byte
    thumbnails/{messageId}/thumb-{size}-{filename}      an attachment's thumbnails
    thumbnails/{messageId}/compressed-{filename}        its compressed rendition
    thumbnails/{fileId}/…                               an avatar's renditions (no message)

The upload id is the file id. An avatar's key carries its file id, so a user's new
avatar never overwrites (nor is deleted with) the previous one. A rendition in another
format than its name's gets that format's extension appended (`thumb-64-a.gif.png`,
`compressed-a.png.webp`), so two attachments of one message never share a key as long
as their filenames differ (the API refuses a second live attachment of the same name).
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePosixPath

from relay.files.contracts import FileKind, FileView

MAX_FILENAME = 200
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str) -> str:
    """The last path segment of `name`, ASCII letters, digits, `.`, `_` and `-` only
    (anything else becomes `-`), never empty, never hidden, at most MAX_FILENAME long."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("-", ascii_name).strip(".-") or "file"
    if len(cleaned) > MAX_FILENAME:
        path = PurePosixPath(cleaned)
        suffix = path.suffix[:16]
        cleaned = path.stem[: MAX_FILENAME - len(suffix)] + suffix
    return cleaned


def upload_key(file_id: str, filename: str) -> str:
    return f"temp/{file_id}/{filename}"


def final_key(view: FileView) -> str:
    if view.kind == FileKind.AVATAR:
        return f"avatars/{view.user_id}/{view.id}/{view.filename}"
    return f"attachments/{view.conversation_id}/{view.message_id}/{view.filename}"


def renditions_prefix(view: FileView) -> str:
    owner = view.message_id if view.kind == FileKind.ATTACHMENT else view.id
    return f"thumbnails/{owner}/"


def _with_extension(filename: str, extension: str | None) -> str:
    """`filename`, with `.{extension}` appended when it does not already end so: a GIF's
    PNG thumbnail is `thumb-64-a.gif.png`, which no other file of the message can share."""
    if extension is None:
        return filename
    suffix = PurePosixPath(filename).suffix.lower().lstrip(".")
    same = suffix == extension or (extension == "jpg" and suffix == "jpeg")
    return filename if same else f"{filename}.{extension}"


def thumbnail_name(size: int, filename: str, extension: str | None = None) -> str:
    """`thumb-{size}-{filename}`, in another format with its extension appended."""
    return f"thumb-{size}-{_with_extension(filename, extension)}"


def compressed_name(filename: str, extension: str) -> str:
    """`compressed-{filename}` (a JPEG, or a WebP when transparent)."""
    return f"compressed-{_with_extension(filename, extension)}"


RENDITION_EXTENSIONS = (None, "jpg", "png", "webp")


def possible_rendition_keys(view: FileView, sizes: list[int]) -> list[str]:
    """Every key a rendition of this file could have, whatever its format: what a failure
    halfway cleans up without knowing which renditions were written."""
    prefix = renditions_prefix(view)
    names = {
        thumbnail_name(size, view.filename, extension)
        for size in sizes
        for extension in RENDITION_EXTENSIONS
    }
    names |= {compressed_name(view.filename, ext) for ext in ("jpg", "webp")}
    return sorted(prefix + name for name in names)


def every_key(view: FileView) -> list[str]:
    """Every object the file may have written (its upload, its original, its renditions)."""
    keys = [view.upload_key, final_key(view)]
    if view.object_key:
        keys.append(view.object_key)
    keys += [rendition.key for rendition in view.renditions]
    return sorted({key for key in keys if key})
