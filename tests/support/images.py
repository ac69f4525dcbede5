"""Real images made with Pillow for the media tests: JPEG with EXIF (GPS included), PNG,
WebP, and hostile ones (a decompression bomb, a truncated file, a lying name)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import ExifTags, Image

CAMERA_MAKER = "SecretCam"  # an EXIF value that must not survive the upload
GPS_LATITUDE = ((13, 1), (45, 1), (30, 1))


def jpeg(
    size: tuple[int, int] = (640, 480),
    *,
    orientation: int = 1,
    exif: bool = True,
    colour: tuple[int, int, int] = (200, 30, 30),
    quality: int = 90,
) -> bytes:
    """A JPEG; with EXIF: maker, orientation and a GPS position, plus an XMP packet."""
    image = Image.new("RGB", size, colour)
    # A gradient stripe so the image is not one flat colour (and compresses like a photo a bit).
    for x in range(0, size[0], 8):
        image.paste((x % 256, 100, 255 - x % 256), (x, 0, min(x + 4, size[0]), size[1] // 4))
    out = io.BytesIO()
    options: dict[str, object] = {"quality": quality}
    if exif:
        data = Image.Exif()
        data[ExifTags.Base.Make] = CAMERA_MAKER
        data[ExifTags.Base.Orientation] = orientation
        gps = data.get_ifd(ExifTags.IFD.GPSInfo)
        gps[ExifTags.GPS.GPSLatitudeRef] = "N"
        gps[ExifTags.GPS.GPSLatitude] = (13.0, 45.0, 30.0)
        options["exif"] = data
        options["comment"] = b"secret comment"
        options["xmp"] = b"<x:xmpmeta>secret xmp</x:xmpmeta>"
    image.save(out, "JPEG", **options)
    return out.getvalue()


def png(size: tuple[int, int] = (300, 200), *, alpha: bool = True) -> bytes:
    """A PNG (RGBA by default) with a text chunk."""
    from PIL.PngImagePlugin import PngInfo

    image = Image.new("RGBA" if alpha else "RGB", size, (10, 120, 200))
    info = PngInfo()
    info.add_text("Comment", "secret text")
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info)
    return out.getvalue()


def webp(size: tuple[int, int] = (200, 100)) -> bytes:
    """A WebP."""
    out = io.BytesIO()
    Image.new("RGB", size, (0, 200, 0)).save(out, "WEBP")
    return out.getvalue()


def gif(size: tuple[int, int] = (20, 20)) -> bytes:
    """A GIF: an image type the platform does not take."""
    out = io.BytesIO()
    Image.new("P", size).save(out, "GIF")
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A PNG of a few dozen bytes whose header declares width x height pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


def decoded(data: bytes) -> Image.Image:
    """The image the bytes hold (loaded)."""
    image = Image.open(io.BytesIO(data))
    image.load()
    return image
