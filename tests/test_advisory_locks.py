"""Advisory lock keys: declared once, in fleetcore/advisory_locks.py, and all distinct."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import fleetcore
from fleetcore.advisory_locks import LockKey

PACKAGE = Path(fleetcore.__file__).parent
# A module-level lock constant given a number of its own: NAME_LOCK... = 0x... / 1234...
STRAY = re.compile(r"^\w*LOCK\w*\s*(?::\s*\w+\s*)?=\s*(0x[0-9A-Fa-f]+|\d{4,})\b", re.M)


def strays(root: Path) -> list[str]:
    return sorted(
        f"{path.relative_to(root)}: {match.group(0)}"
        for path in root.rglob("*.py")
        if path.name != "advisory_locks.py"
        for match in STRAY.finditer(path.read_text())
    )


def test_every_lock_key_is_declared_in_the_registry() -> None:
    assert strays(PACKAGE) == []


def test_the_registry_refuses_a_repeated_key() -> None:
    assert len({key.value for key in LockKey}) == len(LockKey.__members__)
    with pytest.raises(ValueError, match="duplicate"):
        exec(  # noqa: S102 (a class like the registry, with one key twice)
            "from enum import IntEnum, unique\n"
            "@unique\nclass Twice(IntEnum):\n    A = 1\n    B = 1\n"
        )


def test_the_stray_check_sees_a_stray(tmp_path: Path) -> None:
    (tmp_path / "purge.py").write_text("RUNNER_LOCK_KEY = 0x0F1EE7C2  # mine\n")
    (tmp_path / "ok.py").write_text("RUNNER_LOCK_KEY = LockKey.HOUSEKEEPING\n")
    assert strays(tmp_path) == ["purge.py: RUNNER_LOCK_KEY = 0x0F1EE7C2"]
