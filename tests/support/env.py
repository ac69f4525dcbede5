"""The environment a `fleetcore` command runs in under test or benchmark."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

from sqlalchemy.engine import URL

from tests.support import forkserver
from tests.support.forkserver import FLEETCORE as FLEETCORE  # where the tests find it

# One random key per test run: servers refuse the published development key outside
# development, and a test must not rely on a key anyone can read.
_SECRET_KEY = secrets.token_urlsafe(48)


def fleetcore_env(**extra: str) -> dict[str, str]:
    """This process's environment without anyone's FLEETCORE_* settings, in test mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
    env.update(FLEETCORE_ENVIRONMENT="test", FLEETCORE_SECRET_KEY=_SECRET_KEY)
    env.update(extra)
    return env


def live_command_env(database_url: URL, data_dir: Path) -> dict[str, str]:
    """The environment of a `fleetcore` command that works on a test's live database, as a
    second process on the same host would: SQLite, the live file under the name the
    command opens in `data_dir` (live_database's file there); PostgreSQL, its URL."""
    env = fleetcore_env(FLEETCORE_DATA_DIR=str(data_dir))
    if database_url.get_backend_name() == "sqlite":
        (data_dir / "fleetcore.db").symlink_to(data_dir / "live.db")
    else:  # the command provisions through the server's database, as export/import do
        env["FLEETCORE_DATABASE_URL"] = database_url.render_as_string(hide_password=False)
    return env


def simulate(kind: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`fleetcore simulate --kind KIND ARGS` to its end (two minutes at most)."""
    return forkserver.run(
        [FLEETCORE, "simulate", "--kind", kind, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
