"""The MediaStore contract (media/store.py), run against the filesystem store and the S3 store
(obstore) talking to moto's real local S3 server."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fleetcore.db import Database
from fleetcore.media.store import FilesystemStore, MediaStore, S3Store, check_key
from tests.conftest import client_for, running_app
from tests.support import images
from tests.support.devices import new_device
from tests.support.postgres import free_port
from tests.support.tenants import make_tenant

BUCKET = "fleetcore-media-test"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free port, with credentials in the standard AWS variables."""
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"  # moto accepts any
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3  # moto's dependency; used here only to create the bucket

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(params=["file", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[MediaStore]:
    if request.param == "file":
        yield FilesystemStore(tmp_path / "media")
        return
    endpoint = request.getfixturevalue("s3_endpoint")
    # A prefix per test: tests share the bucket.
    yield S3Store(BUCKET, prefix=f"t-{os.urandom(4).hex()}", endpoint=endpoint, region="us-east-1")


async def listed(store: MediaStore, prefix: str = "") -> dict[str, int]:
    return {key: stat.size async for key, stat in store.keys(prefix)}


async def test_put_get_stat_delete(store: MediaStore) -> None:
    key = "org/dev/abc-1"
    assert await store.stat(key) is None
    await store.put(key, b"0123456789")
    stat = await store.stat(key)
    assert stat is not None
    assert stat.size == 10
    assert abs(stat.modified - datetime.now(UTC)) < timedelta(minutes=5)
    assert await store.get_range(key, 0, 10) == b"0123456789"
    assert await store.get_range(key, 2, 5) == b"234"
    assert await store.get_range(key, 7, 10) == b"789"
    await store.put(key, b"new")  # replaces
    assert await store.get_range(key, 0, 3) == b"new"
    await store.delete(key)
    assert await store.stat(key) is None
    await store.delete(key)  # idempotent
    with pytest.raises(KeyError):
        await store.get_range(key, 0, 1)


async def test_keys_under_a_prefix(store: MediaStore) -> None:
    await store.put("a/d1/x", b"1")
    await store.put("a/d1/y.thumb.jpg", b"22")
    await store.put("a/d2/z", b"333")
    await store.put("b/d1/x", b"4444")
    assert await listed(store, "a/") == {"a/d1/x": 1, "a/d1/y.thumb.jpg": 2, "a/d2/z": 3}
    assert await listed(store, "a/d1/") == {"a/d1/x": 1, "a/d1/y.thumb.jpg": 2}
    assert set(await listed(store)) == {"a/d1/x", "a/d1/y.thumb.jpg", "a/d2/z", "b/d1/x"}


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/abs", "a//b", "a/./b", "", "a/b/", "a b", "a\\b", ".tmp/x"]
)
async def test_keys_that_could_escape_are_refused(store: MediaStore, key: str) -> None:
    with pytest.raises(ValueError, match="not a media key"):
        await store.put(key, b"x")
    with pytest.raises(ValueError, match="not a media key"):
        await store.stat(key)
    with pytest.raises(ValueError, match="not a media key"):
        check_key(key)


async def test_readers_never_see_half_a_file(store: MediaStore) -> None:
    key = "org/dev/big"
    old, new = b"a" * 3_000_000, b"b" * 3_000_000
    await store.put(key, old)
    seen: set[bytes] = set()

    async def read_while_writing() -> None:
        for _ in range(20):
            data = await store.get_range(key, 0, 3_000_000)
            seen.add(bytes(set(data)))  # one distinct byte value: a whole version
            await asyncio.sleep(0)

    await asyncio.gather(store.put(key, new), read_while_writing())
    assert seen <= {b"a", b"b"}
    assert await store.get_range(key, 0, 3_000_000) == new


async def test_a_filesystem_delete_leaves_no_empty_directory(tmp_path: Path) -> None:
    # As S3's prefixes vanish with their last object: no store fills up with empty folders.
    root = tmp_path / "media"
    store = FilesystemStore(root)
    await store.put("o/d/m1", b"x")
    await store.put("o/d/m2", b"y")
    await store.put("o/e/m3", b"z")
    await store.delete("o/d/m1")
    assert (root / "o" / "d").is_dir()  # m2 is still there
    await store.delete("o/d/m2")
    assert not (root / "o" / "d").exists()
    assert (root / "o" / "e" / "m3").is_file()
    await store.delete("o/e/m3")
    assert root.is_dir()
    assert [p.name for p in root.iterdir() if p.name != ".tmp"] == []
    await store.put("o/d/m1", b"again")  # the pruned directories come back as needed
    assert await store.get_range("o/d/m1", 0, 5) == b"again"


async def test_filesystem_store_keeps_half_written_files_out_of_sight(tmp_path: Path) -> None:
    store = FilesystemStore(tmp_path / "media")
    await store.put("o/d/m", b"x")
    (tmp_path / "media" / ".tmp").mkdir(exist_ok=True)
    (tmp_path / "media" / ".tmp" / "left.part").write_bytes(b"half")
    assert await listed(store) == {"o/d/m": 1}
    # A symlink planted in the tree does not lead out of it.
    (tmp_path / "outside").write_bytes(b"secret")
    (tmp_path / "media" / "o" / "link").symlink_to(tmp_path / "outside")
    with pytest.raises(ValueError, match="not a media key"):
        await store.get_range("o/link", 0, 6)


async def test_the_app_stores_and_serves_media_from_s3(
    s3_endpoint: str, db: Database, tmp_path: Path
) -> None:
    prefix = f"app-{os.urandom(4).hex()}"
    async with (
        running_app(
            db,
            tmp_path,
            media_store="s3",
            media_s3_bucket=BUCKET,
            media_s3_prefix=prefix,
            media_s3_endpoint=s3_endpoint,
            media_s3_region="us-east-1",
        ) as app,
        client_for(app) as client,
    ):
        assert isinstance(app.state.media_store, S3Store)
        tenant = await make_tenant(client, db)
        _, token = await new_device(client, tenant)
        sent = await client.post(
            "/api/v1/devices/me/events",
            headers={"X-Device-Token": token},
            data={"event": '{"type": "photo"}'},
            files={"image": ("a.jpg", images.jpeg((320, 200)), "image/jpeg")},
        )
        assert sent.status_code == 201, sent.text
        media_id = sent.json()["media"][0]["id"]
        served = await client.get(
            f"/api/v1/media/{media_id}", headers={**tenant.headers(), "Range": "bytes=0-1"}
        )
        assert served.status_code == 206
        assert served.content == b"\xff\xd8"
        assert not (tmp_path / "media").exists()  # nothing on the local disk
        assert len([key async for key, _ in app.state.media_store.keys("")]) == 2
