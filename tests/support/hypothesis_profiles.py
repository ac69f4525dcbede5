"""Hypothesis settings for the fuzz tests: "ci" (default) or "deep", by FLEETCORE_FUZZ_PROFILE.

ci is bounded and derandomized so a CI run is reproducible and fast; deep runs many more
examples with a random seed and the example database, for a session of bug hunting
(``FLEETCORE_FUZZ_PROFILE=deep .venv/bin/pytest tests/test_fuzz_*.py``). The profiles are
registered under ``fuzz-`` names and applied per test (``@fuzz()``), never loaded globally,
so other property tests (Schemathesis) keep their own settings.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# A decoder that takes longer than this on one example is a bounded-time defect; the bound
# is generous because the machine running CI is shared and slow, not because we expect it.
DEADLINE_MS = 2_000

settings.register_profile(
    "fuzz-ci",
    max_examples=300,
    derandomize=True,
    database=None,
    deadline=DEADLINE_MS,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "fuzz-deep",
    max_examples=20_000,
    deadline=DEADLINE_MS,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

PROFILE = os.environ.get("FLEETCORE_FUZZ_PROFILE", "ci")
if PROFILE not in ("ci", "deep"):
    raise RuntimeError(f"FLEETCORE_FUZZ_PROFILE must be ci or deep, not {PROFILE!r}")
BASE = settings.get_profile(f"fuzz-{PROFILE}")


def fuzz(scale: float = 1.0, *, deadline: int | None = DEADLINE_MS) -> settings:
    """The selected profile as a test decorator; `scale` < 1 for costly examples, and no
    deadline where the test bounds time itself (a socket timeout)."""
    return settings(BASE, max_examples=max(10, int(BASE.max_examples * scale)), deadline=deadline)
