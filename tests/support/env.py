"""The environment a `fleetcore` command runs in under test or benchmark."""

from __future__ import annotations

import os
import secrets

# One random key per test run: servers refuse the published development key outside
# development, and a test must not rely on a key anyone can read.
_SECRET_KEY = secrets.token_urlsafe(48)


def fleetcore_env(**extra: str) -> dict[str, str]:
    """This process's environment without anyone's FLEETCORE_* settings, in test mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCORE_")}
    env.update(FLEETCORE_ENVIRONMENT="test", FLEETCORE_SECRET_KEY=_SECRET_KEY)
    env.update(extra)
    return env
