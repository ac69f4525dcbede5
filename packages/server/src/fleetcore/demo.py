"""The `make run` demo: an organization, its admin (password printed once), a few devices."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore import migrate
from fleetcore.auth import users
from fleetcore.auth.models import User
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import OrganizationIn, UserIn
from fleetcore.auth.security import hash_password
from fleetcore.db import Database, utcnow
from fleetcore.devices import credentials
from fleetcore.devices.models import Device, DeviceProfile
from fleetcore.rules.models import Rule
from fleetcore.rules.schemas import RuleIn

DEMO_SLUG = "demo"
DEMO_EMAIL = "admin@demo.example.com"
DEMO_DEVICES = (
    ("Boiler room sensor", "ESP32-0001"),
    ("Loading dock camera", "CAM-0002"),
    ("Lobby vending machine", "VM-0003"),
)
DEMO_KEYS = [
    {"key": "temperature", "type": "number", "unit": "°C", "min": -40, "max": 125},
    {"key": "humidity", "type": "number", "unit": "%", "min": 0, "max": 100},
    {"key": "current", "type": "number", "unit": "A", "min": 0, "max": 100},
]


@dataclass(frozen=True, slots=True)
class DemoLogin:
    """What `make run` prints so a new user can sign in and send a reading."""

    email: str
    password: str
    created: bool
    device_token: str = ""


async def ensure_demo(database: Database) -> DemoLogin:
    """Create the demo data once; on later runs give the admin a fresh password to print."""
    await migrate.upgrade(database)
    password = secrets.token_urlsafe(12)
    async with database.session(write=True) as session:
        org = await users.get_organization_by_slug(session, DEMO_SLUG)
        if org is not None:
            admin = await session.scalar(select(User).where(User.email == DEMO_EMAIL))
            if admin is not None:
                admin.password_hash = await hash_password(password)
                admin.password_changed_at = utcnow()
                admin.is_active = True
                token = await _fresh_device_token(session, org.id)
                await session.commit()
                return DemoLogin(DEMO_EMAIL, password, created=False, device_token=token)
        else:
            org = await users.create_organization(
                session, None, data=OrganizationIn(name="Demo fleet", slug=DEMO_SLUG)
            )
        await users.create_user(
            session,
            None,
            data=UserIn(
                email=DEMO_EMAIL, password=password, role=Role.ADMIN, organization_id=org.id
            ),
            is_superuser=True,
        )
        profile = DeviceProfile(
            organization_id=org.id,
            name="Environmental sensor",
            telemetry_keys=DEMO_KEYS,
            description="ESP32 temperature, humidity and current sensor",
        )
        session.add(profile)
        await session.flush()
        for name, serial in DEMO_DEVICES:
            session.add(
                Device(
                    organization_id=org.id, profile_id=profile.id, name=name, serial_number=serial
                )
            )
        await session.flush()
        token = await _fresh_device_token(session, org.id)
        await session.commit()
    return DemoLogin(DEMO_EMAIL, password, created=True, device_token=token)


async def _fresh_device_token(session: AsyncSession, organization_id: uuid.UUID) -> str:
    """A new token for the first demo device (the old one stops working), to print."""
    device = await session.scalar(
        select(Device).where(
            Device.organization_id == organization_id,
            Device.serial_number == DEMO_DEVICES[0][1],
            Device.deleted_at.is_(None),
        )
    )
    return "" if device is None else await credentials.replace_token(session, device)


# Rules on the simulated fleet's profile, so that the demo's alerts page is not empty: a
# simulated spike fires one now and then, and the next normal sample clears it.
DEMO_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "Temperature spike",
        "description": "Demo rule: a room above 35 °C; clears below 30 °C.",
        "condition": {"key": "temperature", "op": ">", "value": 35},
        "clear_condition": {"key": "temperature", "op": "<", "value": 30},
        "severity": "critical",
    },
    {
        "name": "Vibration high",
        "description": "Demo rule: a machine vibrating above 10 mm/s.",
        "condition": {"key": "vibration", "op": ">", "value": 10},
        "severity": "major",
    },
    {
        "name": "Sensor silent",
        "description": "Demo rule: no reading for 5 minutes.",
        "condition": {"type": "no_data", "minutes": 5},
        "severity": "warning",
    },
)


async def ensure_demo_rules(
    database: Database, organization_id: uuid.UUID, profile_id: uuid.UUID
) -> int:
    """The demo rules on `profile_id`, each created once (by name); how many were created."""
    created = 0
    async with database.session(write=True) as session:
        names = set(
            await session.scalars(select(Rule.name).where(Rule.organization_id == organization_id))
        )
        for spec in DEMO_RULES:
            if spec["name"] in names:
                continue
            data = RuleIn.model_validate({**spec, "profile_id": profile_id})
            values = data.model_dump(mode="json", exclude_none=True)
            values["profile_id"] = profile_id
            session.add(Rule(organization_id=organization_id, **values))
            created += 1
        await session.commit()
    return created
