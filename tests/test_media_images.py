"""Image checks (pure): type from the bytes, size, pixel cap before decoding, full decode,
metadata stripped after the orientation is applied, thumbnails."""

from __future__ import annotations

import pytest

from fleetcore.errors import DomainError
from fleetcore.media.images import THUMB_SIZE, check_image, sniff
from tests.support import images

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000}


def refusal(data: bytes, **limits: int) -> DomainError:
    with pytest.raises(DomainError) as caught:
        check_image(data, **{**LIMITS, **limits})
    return caught.value


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (images.jpeg(), "image/jpeg"),
        (images.png(), "image/png"),
        (images.webp(), "image/webp"),
        (images.gif(), None),
        (b"%PDF-1.7 not an image", None),
        (b"", None),
    ],
)
def test_the_type_comes_from_the_bytes(data: bytes, content_type: str | None) -> None:
    assert sniff(data) == content_type


def test_jpeg_png_and_webp_pass_and_keep_their_type() -> None:
    for data, content_type, size in (
        (images.jpeg((640, 480)), "image/jpeg", (640, 480)),
        (images.png((300, 200)), "image/png", (300, 200)),
        (images.webp((200, 100)), "image/webp", (200, 100)),
    ):
        checked = check_image(data, **LIMITS)
        assert checked.content_type == content_type
        assert (checked.width, checked.height) == size
        assert images.decoded(checked.data).size == size
        assert len(checked.sha256) == 64


@pytest.mark.parametrize(
    ("data", "code", "status"),
    [
        (images.gif(), "MEDIA_UNSUPPORTED_TYPE", 415),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "MEDIA_UNSUPPORTED_TYPE", 415),
        (images.png_bomb(), "MEDIA_TOO_MANY_PIXELS", 422),
        (images.jpeg()[:600], "MEDIA_CORRUPT", 422),
        (images.jpeg()[: len(images.jpeg()) // 2], "MEDIA_CORRUPT", 422),
        (b"\xff\xd8\xff" + b"not really a jpeg" * 20, "MEDIA_CORRUPT", 422),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "MEDIA_CORRUPT", 422),
    ],
    ids=["gif", "svg", "bomb", "header-only", "truncated", "garbage-jpeg", "garbage-png"],
)
def test_bad_images_are_refused_with_a_code(data: bytes, code: str, status: int) -> None:
    error = refusal(data)
    assert (error.code, error.status_code) == (code, status)


def test_the_bomb_is_refused_from_its_header_alone() -> None:
    bomb = images.png_bomb(30_000, 30_000)
    assert len(bomb) < 200
    error = refusal(bomb)
    assert error.details == {"width": 30_000, "height": 30_000, "max_pixels": 40_000_000}
    # Under Pillow's own limit but over ours: still refused, still without decoding.
    assert refusal(images.png_bomb(8000, 6000)).code == "MEDIA_TOO_MANY_PIXELS"


def test_size_limit_is_checked_first() -> None:
    data = images.jpeg((800, 600))
    error = refusal(data, max_bytes=len(data) - 1)
    assert (error.code, error.status_code) == ("MEDIA_TOO_LARGE", 413)
    assert error.details["max_bytes"] == len(data) - 1
    assert check_image(data, **{**LIMITS, "max_bytes": len(data)}).width == 800


def test_exif_gps_xmp_and_comments_are_stripped() -> None:
    original = images.jpeg()
    assert images.CAMERA_MAKER.encode() in original
    assert b"secret" in original
    assert images.decoded(original).getexif().get_ifd(0x8825)  # the GPS block is there before
    checked = check_image(original, **LIMITS)
    assert images.CAMERA_MAKER.encode() not in checked.data
    assert b"secret" not in checked.data
    after = images.decoded(checked.data)
    assert not after.getexif()
    assert not {"exif", "xmp", "comment"} & set(after.info)
    png = check_image(images.png(), **LIMITS)
    assert b"secret text" not in png.data


def test_the_orientation_is_applied_before_the_exif_goes() -> None:
    # Orientation 6: the camera was turned; the stored image stands upright.
    checked = check_image(images.jpeg((640, 480), orientation=6), **LIMITS)
    assert (checked.width, checked.height) == (480, 640)
    assert images.decoded(checked.data).size == (480, 640)


def test_thumbnails_are_small_jpegs_keeping_the_aspect() -> None:
    for data, expected in (
        (images.jpeg((640, 480)), (THUMB_SIZE, 240)),
        (images.png((300, 200)), (300, 200)),  # smaller already: not enlarged
        (images.jpeg((1000, 2000), orientation=1), (160, THUMB_SIZE)),
    ):
        thumb = images.decoded(check_image(data, **LIMITS).thumbnail)
        assert thumb.format == "JPEG"
        assert thumb.size == expected
