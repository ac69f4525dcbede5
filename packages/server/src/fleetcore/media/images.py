"""Image checks before anything is stored (pure; Pillow): what the bytes are, how large, how
many pixels, whether they decode; then the image without its metadata, and a thumbnail.

The type comes from the bytes (JPEG, PNG, WebP), never from a header or a file name. The
pixel count is read from the image's header and checked before a single pixel is decoded, so
a small file declaring a huge image (a decompression bomb) costs nothing. A full decode then
refuses truncated and corrupt files. EXIF (GPS included), XMP, comments and text chunks are
dropped: the image is re-encoded after its EXIF orientation is applied (a JPEG that needs no
rotation keeps its quantisation tables, so it loses nothing more). The colour profile (ICC)
stays: it is how the pixels are meant, not data about where they were taken.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile
from PIL.PngImagePlugin import PngImageFile
from PIL.WebPImagePlugin import WebPImageFile

from fleetcore.errors import DomainError, Invalid, PayloadTooLarge

JPEG, PNG, WEBP = "image/jpeg", "image/png", "image/webp"
CONTENT_TYPES = (JPEG, PNG, WEBP)
THUMB_SIZE = 320  # the longest side of a thumbnail
THUMB_TYPE = JPEG
_ORIENTATION = 0x0112
# Pillow holds a decoded image in memory: two at once per process bound that.
_DECODING = threading.BoundedSemaphore(2)


class UnsupportedMediaType(DomainError):
    """The bytes are not a type this route takes."""

    status_code = 415
    default_code = "MEDIA_UNSUPPORTED_TYPE"


def too_large(size: int | None, limit: int) -> PayloadTooLarge:
    """MEDIA_TOO_LARGE (413), naming the limit."""
    details: dict[str, Any] = {"max_bytes": limit}
    if size is not None:
        details["bytes"] = size
    return PayloadTooLarge(
        f"the image is larger than {limit} bytes", code="MEDIA_TOO_LARGE", details=details
    )


def unsupported() -> UnsupportedMediaType:
    """MEDIA_UNSUPPORTED_TYPE (415)."""
    return UnsupportedMediaType(
        "the file is not a JPEG, PNG or WebP image (the type is read from its bytes)",
        details={"accepted": list(CONTENT_TYPES)},
    )


def corrupt(reason: str) -> Invalid:
    """MEDIA_CORRUPT (422)."""
    return Invalid(f"the image cannot be decoded: {reason}", code="MEDIA_CORRUPT")


def sniff(data: bytes) -> str | None:
    """The content type the bytes start with, or None (not an image we take)."""
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


# The plug-in of the sniffed type, opened directly: Image.open would try every format and
# run its own bomb check (a warning, or an error past twice its global limit) before ours.
_PLUGINS: dict[str, Any] = {JPEG: JpegImageFile, PNG: PngImageFile, WEBP: WebPImageFile}
_FORMATS = {JPEG: "JPEG", PNG: "PNG", WEBP: "WEBP"}


@dataclass(frozen=True, slots=True)
class CheckedImage:
    """An image that passed every check, re-encoded without metadata, and its thumbnail."""

    content_type: str
    data: bytes
    width: int
    height: int
    sha256: str
    thumbnail: bytes


def check_image(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """The checked image, or MEDIA_TOO_LARGE / MEDIA_UNSUPPORTED_TYPE / MEDIA_TOO_MANY_PIXELS /
    MEDIA_CORRUPT."""
    if len(data) > max_bytes:
        raise too_large(len(data), max_bytes)
    content_type = sniff(data)
    if content_type is None:
        raise unsupported()
    with _DECODING:
        return _decode(data, content_type, max_pixels)


async def check_image_async(data: bytes, *, max_bytes: int, max_pixels: int) -> CheckedImage:
    """check_image off the event loop."""
    return await asyncio.to_thread(check_image, data, max_bytes=max_bytes, max_pixels=max_pixels)


def _decode(data: bytes, content_type: str, max_pixels: int) -> CheckedImage:
    try:
        image = _PLUGINS[content_type](io.BytesIO(data))
    except Exception as exc:  # untrusted bytes: any failure to parse the header is corruption
        raise corrupt(_reason(exc)) from None
    width, height = image.size
    if width <= 0 or height <= 0:
        raise corrupt("the image has no pixels")
    if width * height > max_pixels:
        raise Invalid(
            f"the image declares {width}x{height} pixels, more than {max_pixels} in all",
            code="MEDIA_TOO_MANY_PIXELS",
            details={"width": width, "height": height, "max_pixels": max_pixels},
        )
    try:
        image.load()  # truncated or corrupt data fails here (LOAD_TRUNCATED_IMAGES is off)
        orientation = image.getexif().get(_ORIENTATION)
        icc = image.info.get("icc_profile")
        upright = ImageOps.exif_transpose(image) if orientation in range(2, 9) else image
        upright.info = {}  # nothing of the original's metadata is carried into the save
        out = _encode(upright, content_type, keep=upright is image, icc=icc)
        thumb = _thumbnail(upright)
    except Image.DecompressionBombError as exc:  # frames past the header's size
        raise corrupt(_reason(exc)) from None
    except Exception as exc:  # untrusted bytes: any decoder failure is corruption
        raise corrupt(_reason(exc)) from None
    return CheckedImage(
        content_type=content_type,
        data=out,
        width=upright.width,
        height=upright.height,
        sha256=hashlib.sha256(out).hexdigest(),
        thumbnail=thumb,
    )


def _encode(image: Image.Image, content_type: str, *, keep: bool, icc: bytes | None) -> bytes:
    out = io.BytesIO()
    options: dict[str, Any] = {"exif": b""}
    if icc:
        options["icc_profile"] = icc
    if content_type == JPEG:
        if keep and isinstance(image, JpegImageFile) and image.mode in ("L", "RGB", "CMYK"):
            options["quality"] = "keep"  # the original's tables: no further loss
        else:
            image = image if image.mode in ("L", "RGB", "CMYK") else image.convert("RGB")
            options["quality"] = 90
    elif content_type == WEBP:
        image = image if image.mode in ("RGB", "RGBA") else image.convert("RGBA")
        options["quality"] = 90
    image.save(out, _FORMATS[content_type], **options)
    return out.getvalue()


def _thumbnail(image: Image.Image) -> bytes:
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIZE, THUMB_SIZE))
    if thumb.mode in ("RGBA", "LA", "PA") or (thumb.mode == "P" and "transparency" in thumb.info):
        rgba = thumb.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        thumb = background
    elif thumb.mode != "RGB":
        thumb = thumb.convert("RGB")
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80)
    return out.getvalue()


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return text
