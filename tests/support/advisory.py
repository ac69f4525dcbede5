"""Analytics rows written straight through the models (the engine is not part of these
tests): findings, health, recommendations, and a profile that watches keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from fleetcore.analytics.models import AnalyticsFinding, DeviceHealth, Recommendation
from fleetcore.db import Database
from fleetcore.devices.models import Device, DeviceProfile

NOW_MS = 1_760_000_000_000
DAY_MS = 86_400_000


async def add_finding(
    db: Database, org_id: uuid.UUID, device_id: str | uuid.UUID, **values: Any
) -> int:
    """One finding (a warning robust-z on vibration unless told otherwise); returns its id."""
    fields: dict[str, Any] = {
        "key": "vibration",
        "method": "robust_z",
        "severity": "warning",
        "ts": NOW_MS,
        "score": 6.5,
        "threshold": 4.0,
        "expected_low": 1.0,
        "expected_high": 2.0,
        "evidence": [[NOW_MS - 1000, 1.5], [NOW_MS, 9.0]],
        "explanation": "vibration 9 is far above its usual 1 to 2",
        **values,
    }
    finding = AnalyticsFinding(
        organization_id=org_id, device_id=uuid.UUID(str(device_id)), **fields
    )
    async with db.session(write=True) as session:
        session.add(finding)
        await session.commit()
        return finding.id


async def add_health(
    db: Database, org_id: uuid.UUID, device_id: str | uuid.UUID, score: float, **values: Any
) -> None:
    """A device's health row."""
    fields: dict[str, Any] = {
        "score_day_ago": min(score + 0.1, 1.0),
        "trend": "worsening",
        "contributors": [
            {"key": "vibration", "source": "findings", "reason": "2 robust_z", "penalty": 0.3},
            {
                "key": "temperature",
                "source": "wear",
                "reason": "failure within 12 days",
                "penalty": 0.1,
            },
        ],
        "wear": {},
        "open_findings": 2,
        **values,
    }
    async with db.session(write=True) as session:
        session.add(
            DeviceHealth(
                device_id=uuid.UUID(str(device_id)), organization_id=org_id, score=score, **fields
            )
        )
        await session.commit()


async def add_recommendation(
    db: Database, org_id: uuid.UUID, device_id: str | uuid.UUID, **values: Any
) -> uuid.UUID:
    """A proposed inspection unless told otherwise; returns its id."""
    fields: dict[str, Any] = {
        "kind": "inspect",
        "topic": f"wear:vibration:{uuid.uuid4().hex[:6]}",
        "title": "Inspect the pump bearings",
        "rationale": "Vibration is rising toward its failure threshold.",
        "evidence": {
            "finding": {
                "method": "drift",
                "key": "vibration",
                "score": 7.25,
                "threshold": 5.0,
                "ts": NOW_MS,
            },
            "wear": {
                "key": "vibration",
                "status": "ok",
                "now_ms": NOW_MS,
                "eta_ms": NOW_MS + 20 * DAY_MS,
                "low_ms": NOW_MS + 12 * DAY_MS,
                "high_ms": NOW_MS + 30 * DAY_MS,
                "level": 0.8,
            },
        },
        "expires_at": datetime.now(UTC) + timedelta(days=1),
        **values,
    }
    rec = Recommendation(organization_id=org_id, device_id=uuid.UUID(str(device_id)), **fields)
    async with db.session(write=True) as session:
        session.add(rec)
        await session.commit()
        return rec.id


async def watch(
    db: Database,
    device_id: str | uuid.UUID,
    analytics: dict[str, Any],
    safety_policy: dict[str, Any] | None = None,
) -> uuid.UUID:
    """Give the device a profile with these analytics settings (and safety policy)."""
    async with db.session(write=True) as session:
        device = await session.get(Device, uuid.UUID(str(device_id)))
        assert device is not None
        profile = DeviceProfile(
            organization_id=device.organization_id,
            name=f"watched {uuid.uuid4().hex[:8]}",
            analytics=analytics,
            safety_policy=safety_policy,
        )
        session.add(profile)
        await session.flush()
        await session.execute(
            update(Device).where(Device.id == device.id).values(profile_id=profile.id)
        )
        await session.commit()
        return profile.id
