"""Every PostgreSQL advisory lock key the platform takes with one bigint, in one place.

Advisory locks share one key space per database: two modules picking the same number would
serialise (or block) each other's unrelated work without any error. Each key is declared
here, once; tests/test_advisory_locks.py checks they stay distinct and that no module
defines a key of its own. The two-integer form (job leases) is a
separate key space; asset moves derive one key per organization from its id.
"""

from __future__ import annotations

from enum import IntEnum, unique


@unique  # a repeated value is an import error, not a silent alias
class LockKey(IntEnum):
    """pg_advisory_lock / pg_advisory_xact_lock keys (one bigint)."""

    MIGRATIONS = 0x0F1EE7C0  # Alembic upgrades, one process at a time
    TELEMETRY_RETENTION = 0x0F1EE7C1  # one retention runner
    TELEMETRY_PACK = 0x0F1EE7C2  # compactor exclusive, late writers shared (packed.py)
    TELEMETRY_COMPACTION = 0x0F1EE7C3  # one compactor (job and CLI)
    HOUSEKEEPING = 0x0F1EE7C4  # one housekeeping runner


JOB_LEASE_CLASS = 0x464C4A42  # pg_try_advisory_lock(class, crc32(job name)): job_leases.py
MQTT_LANE_CLASS = (
    0x464C4C4E  # pg_try_advisory_lock(class, crc32(share group)): external_broker/lane.py
)
ASSET_MOVE_TAG = 0x0A55E7  # xor the organization id's first 8 bytes: assets/service.py
