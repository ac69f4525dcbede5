"""Which enabled rules apply to which device: a rule's scope is a device, a profile or an
asset subtree, so the index knows each device's profile and asset ancestry."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets.models import Asset
from fleetcore.devices.models import Device
from fleetcore.rules.conditions import Condition, Needs, compile_condition, needs_of
from fleetcore.rules.machine import Compiled
from fleetcore.rules.models import Rule, managed_by
from fleetcore.rules.plan import DevicePlan

_CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)


@dataclass(frozen=True, slots=True)
class LiveRule:
    """An enabled rule, compiled."""

    id: uuid.UUID
    organization_id: uuid.UUID
    name: str
    severity: str
    device_id: uuid.UUID | None
    profile_id: uuid.UUID | None
    asset_id: uuid.UUID | None
    compiled: Compiled
    needs: Needs
    key: int = field(init=False)  # id.int: the engine's state is keyed by it (cheap hash)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", self.id.int)

    @classmethod
    def of(cls, rule: Rule) -> LiveRule:
        """Compile a stored rule (validated when it was saved)."""
        condition = _CONDITION.validate_python(rule.condition)
        clear = (
            _CONDITION.validate_python(rule.clear_condition)
            if rule.clear_condition is not None
            else None
        )
        return cls(
            id=rule.id,
            organization_id=rule.organization_id,
            name=rule.name,
            severity=rule.severity,
            device_id=rule.device_id,
            profile_id=rule.profile_id,
            asset_id=rule.asset_id,
            compiled=Compiled(
                condition=compile_condition(condition),
                clear=compile_condition(clear) if clear is not None else None,
                duration_ms=rule.duration_s * 1000,
            ),
            needs=needs_of(condition, clear),
        )


@dataclass(frozen=True, slots=True)
class DeviceMeta:
    """What decides a device's rules, and since when "no data" counts for it."""

    organization_id: uuid.UUID
    profile_id: uuid.UUID | None
    assets: frozenset[uuid.UUID]  # its asset and every ancestor
    created_ms: int


class RuleIndex:
    """Enabled rules by scope, and the devices of the organizations that have any."""

    def __init__(
        self, rules: Iterable[LiveRule] = (), devices: dict[uuid.UUID, DeviceMeta] | None = None
    ) -> None:
        self.rules = list(rules)
        self.devices = devices or {}
        self.organizations = frozenset(r.organization_id for r in self.rules)
        # The same as ints: a batch checks each submission's organization, and an int
        # hashes in C where a uuid hashes in Python.
        self.organization_keys = frozenset(o.int for o in self.organizations)
        self._by_device: dict[uuid.UUID, list[LiveRule]] = defaultdict(list)
        self._by_profile: dict[uuid.UUID, list[LiveRule]] = defaultdict(list)
        self._by_asset: dict[uuid.UUID, list[LiveRule]] = defaultdict(list)
        for rule in self.rules:
            if rule.device_id is not None:
                self._by_device[rule.device_id].append(rule)
            elif rule.profile_id is not None:
                self._by_profile[rule.profile_id].append(rule)
            elif rule.asset_id is not None:
                self._by_asset[rule.asset_id].append(rule)
        self._plans: dict[uuid.UUID, DevicePlan] = {}

    def plan(self, device_id: uuid.UUID) -> DevicePlan:
        """The rules that apply to a device, indexed by key (no rules for a device it does
        not know)."""
        found = self._plans.get(device_id)
        if found is not None:
            return found
        meta = self.devices.get(device_id)
        rules: list[LiveRule] = list(self._by_device.get(device_id, ()))
        if meta is not None:
            if meta.profile_id is not None:
                rules.extend(self._by_profile.get(meta.profile_id, ()))
            for asset_id in meta.assets:
                rules.extend(self._by_asset.get(asset_id, ()))
        self._plans[device_id] = found = DevicePlan.of(rules)
        return found

    def for_device(self, device_id: uuid.UUID) -> tuple[LiveRule, ...]:
        """The rules that apply to a device (empty for a device it does not know)."""
        return self.plan(device_id).rules

    def devices_of(self, rule: LiveRule) -> Iterator[uuid.UUID]:
        """The known devices in a rule's scope."""
        for device_id, meta in self.devices.items():
            if meta.organization_id != rule.organization_id:
                continue
            if (
                rule.device_id == device_id
                or (rule.profile_id is not None and rule.profile_id == meta.profile_id)
                or (rule.asset_id is not None and rule.asset_id in meta.assets)
            ):
                yield device_id


async def load_index(session: AsyncSession) -> RuleIndex:
    """Every enabled rule, and the live devices of their organizations."""
    rows = (await session.scalars(select(Rule).where(Rule.enabled.is_(True)))).all()
    rules = [LiveRule.of(r) for r in rows if managed_by(r) is None]  # others fire them
    organizations = {r.organization_id for r in rules}
    if not organizations:
        return RuleIndex()
    asset_rows = await session.execute(
        select(Asset.id, Asset.parent_id).where(Asset.organization_id.in_(list(organizations)))
    )
    parents = {asset_id: parent_id for asset_id, parent_id in asset_rows.all()}
    devices: dict[uuid.UUID, DeviceMeta] = {}
    query = select(
        Device.id, Device.organization_id, Device.profile_id, Device.asset_id, Device.created_at
    ).where(Device.organization_id.in_(list(organizations)), Device.deleted_at.is_(None))
    for device_id, org_id, profile_id, asset_id, created_at in (await session.execute(query)).all():
        devices[device_id] = DeviceMeta(
            organization_id=org_id,
            profile_id=profile_id,
            assets=_ancestry(asset_id, parents),
            created_ms=int(created_at.timestamp() * 1000),
        )
    return RuleIndex(rules, devices)


def _ancestry(
    asset_id: uuid.UUID | None, parents: dict[uuid.UUID, uuid.UUID | None]
) -> frozenset[uuid.UUID]:
    found: set[uuid.UUID] = set()
    while asset_id is not None and asset_id not in found:  # (stops on a cycle too)
        found.add(asset_id)
        asset_id = parents.get(asset_id)
    return frozenset(found)
