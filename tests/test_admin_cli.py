"""`fleetcore admin create-superuser` and the `make run` demo data."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sqlalchemy import func, select

from fleetcore.auth.models import Organization, User
from fleetcore.auth.security import verify_password
from fleetcore.db import Database
from fleetcore.demo import DEMO_EMAIL, ensure_demo
from fleetcore.devices.models import Device, DeviceCredential
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env


def _run(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = fleetcore_env()
    env["FLEETCORE_DATA_DIR"] = str(data_dir)
    return forkserver.run(
        [FLEETCORE, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


async def test_create_superuser(tmp_path: Path) -> None:
    password = "a long enough superuser pass"
    ok = _run(
        "admin",
        "create-superuser",
        "--email",
        "Root@Example.com",
        "--password",
        password,
        data_dir=tmp_path,
    )
    assert ok.returncode == 0, ok.stderr
    assert "superuser root@example.com created" in ok.stdout
    assert password not in ok.stdout + ok.stderr

    again = _run(
        "admin",
        "create-superuser",
        "--email",
        "root@example.com",
        "--password",
        password,
        data_dir=tmp_path,
    )
    assert again.returncode == 1
    assert "exists" in again.stderr

    short = _run(
        "admin",
        "create-superuser",
        "--email",
        "b@example.com",
        "--password",
        "short",
        data_dir=tmp_path,
    )
    assert short.returncode == 2
    assert "password" in short.stderr

    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'fleetcore.db'}")
    try:
        async with database.session() as session:
            user = await session.scalar(select(User).where(User.email == "root@example.com"))
            assert user is not None
            assert user.is_superuser
            assert user.password_hash.startswith("$argon2id$")
            assert await verify_password(password, user.password_hash)
            count = await session.scalar(select(func.count()).select_from(User))
            assert count == 1
    finally:
        await database.close()


async def test_demo_is_created_once_and_password_renewed(tmp_path: Path) -> None:
    database = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}")
    try:
        first = await ensure_demo(database)
        second = await ensure_demo(database)
        assert first.created
        assert not second.created
        assert first.password != second.password
        assert first.device_token.startswith("fcd_")
        assert second.device_token.startswith("fcd_")
        assert first.device_token != second.device_token
        async with database.session() as session:
            admin = await session.scalar(select(User).where(User.email == DEMO_EMAIL))
            assert admin is not None
            assert await verify_password(second.password, admin.password_hash)
            assert not await verify_password(first.password, admin.password_hash)
            orgs = await session.scalar(select(func.count()).select_from(Organization))
            devices = await session.scalar(select(func.count()).select_from(Device))
            assert (orgs, devices) == (1, 3)
            live = await session.scalar(
                select(func.count())
                .select_from(DeviceCredential)
                .where(DeviceCredential.revoked_at.is_(None))
            )
            assert live == 1  # the first start's token was revoked by the second
    finally:
        await database.close()
