"""The capped body readers of fleetcore/body_limit.py, shared by the OTA package upload and
the media routes: a declared Content-Length past the cap is refused unread, a chunked body is
cut off as it streams, and each caller names the refusal in its own terms."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import Message

from fleetcore.auth.principal import Role
from fleetcore.body_limit import BodyTooLarge, parse_form, read_capped
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.tenants import make_tenant

MIB = 1024 * 1024
BOUNDARY = "fleetcore-limit"


def request_of(chunks: list[bytes], *, declared: int | None = None) -> Request:
    """A starlette Request whose body arrives in `chunks` (no Content-Length unless declared)."""
    headers = [(b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode())]
    if declared is not None:
        headers.append((b"content-length", str(declared).encode()))
    pending = list(chunks)
    read: list[bytes] = []

    async def receive() -> Message:
        chunk = pending.pop(0) if pending else b""
        read.append(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    request.state.read = read
    return request


def form_body(file: bytes) -> list[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="title"\r\n\r\nfw\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="fw.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    return [
        head,
        file[: len(file) // 2],
        file[len(file) // 2 :],
        f"\r\n--{BOUNDARY}--\r\n".encode(),
    ]


async def test_read_capped_refuses_a_declared_length_unread_and_cuts_a_stream() -> None:
    declared = request_of([b"x" * 10], declared=11)
    with pytest.raises(BodyTooLarge) as refused:
        await read_capped(declared, 10)
    assert (refused.value.limit, refused.value.declared) == (10, 11)
    assert declared.state.read == []  # not a byte read
    streamed = request_of([b"x" * 6, b"x" * 6, b"x" * 6])
    with pytest.raises(BodyTooLarge) as cut:
        await read_capped(streamed, 10)
    assert cut.value.declared is None
    assert len(streamed.state.read) == 2  # stopped at the chunk that crossed the cap
    assert await read_capped(request_of([b"x" * 6, b"x" * 4]), 10) == b"x" * 10


async def test_parse_form_within_and_past_the_cap() -> None:
    file = os.urandom(4096)
    body = form_body(file)
    size = sum(len(chunk) for chunk in body)
    form = await parse_form(request_of(body), size, max_files=1, max_fields=1, max_part_size=1024)
    assert form["title"] == "fw"
    upload = form["file"]
    assert not isinstance(upload, str)
    assert await upload.read() == file
    await form.close()
    cut = request_of(body)
    cap = len(body[0]) + len(body[1])  # the third chunk crosses it
    with pytest.raises(BodyTooLarge):
        await parse_form(cut, cap, max_files=1, max_fields=1, max_part_size=1024)
    assert len(cut.state.read) == 3  # the closing boundary was never read
    with pytest.raises(BodyTooLarge) as declared:
        await parse_form(
            request_of(body, declared=size + 1), size, max_files=1, max_fields=1, max_part_size=1
        )
    assert declared.value.declared == size + 1
    # A malformed body is the parser's own error, which the callers name MULTIPART_INVALID.
    with pytest.raises(MultiPartException) as malformed:
        await parse_form(request_of(body), size, max_files=0, max_fields=1, max_part_size=1024)
    assert not isinstance(malformed.value, BodyTooLarge)


async def test_an_ota_package_past_its_limit_is_413_declared_or_streamed(
    db: Database, tmp_path: Path
) -> None:
    async with (
        running_app(db, tmp_path, ota_max_package_mb=1) as app,
        client_for(app) as http,
    ):
        org = await make_tenant(http, db)
        url = "/api/v1/ota/packages"
        headers = org.headers(Role.MANAGER)
        declared = await http.post(
            url,
            headers=headers,
            data={"title": "fw", "version": "1.0", "kind": "firmware"},
            files={"file": ("fw.bin", os.urandom(MIB + 128 * 1024), "application/octet-stream")},
        )
        assert declared.status_code == 413, declared.text
        error = declared.json()["error"]
        assert error["code"] == "OTA_PACKAGE_TOO_LARGE"
        assert error["message"] == "a package may be at most 1 MiB (FLEETCORE_OTA_MAX_PACKAGE_MB)"
        assert error["details"] == {"max_bytes": MIB}

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: cut off as it streams
            for chunk in form_body(os.urandom(MIB + 128 * 1024)):
                yield chunk

        streamed = await http.post(
            url,
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            content=chunks(),
        )
        assert streamed.status_code == 413, streamed.text
        assert streamed.json()["error"]["code"] == "OTA_PACKAGE_TOO_LARGE"
        listed = await http.get(url, headers=org.headers())
        assert listed.json()["items"] == []
