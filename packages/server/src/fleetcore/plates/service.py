"""Watchlists for users: create, change and delete (managers), entries added, imported and
removed (operators). Each watchlist owns a rule (rules/models.py MANAGED_TYPES) that its
alerts belong to, kept in step with the list's name, severity and enabled flag."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts import service as alerts
from fleetcore.alerts.events import AlertBus, AlertChange
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.plates.models import MAX_PLATE, Watchlist, WatchlistEntry
from fleetcore.plates.normalize import normalize
from fleetcore.plates.queries import watchlist_out
from fleetcore.plates.schemas import (
    MAX_ENTRIES_PER_REQUEST,
    EntriesAdded,
    EntryIn,
    EntryOut,
    WatchlistDetailOut,
    WatchlistIn,
    WatchlistOut,
    WatchlistPatch,
)
from fleetcore.rules.models import Rule

RULE_PREFIX = "Watchlist: "


def _not_found() -> NotFound:
    return NotFound("watchlist not found", code="WATCHLIST_NOT_FOUND")


def _audit(
    session: AsyncSession,
    principal: Principal,
    action: str,
    watchlist: Watchlist,
    **details: Any,
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=watchlist.organization_id,
        target_type="watchlist",
        target_id=watchlist.id,
        details={"name": watchlist.name, **details},
    )


def _rule_condition(watchlist_id: uuid.UUID) -> dict[str, Any]:
    return {"type": "watchlist", "watchlist_id": str(watchlist_id)}


async def _flush_named(session: AsyncSession, name: str) -> None:
    # The list's name, and its rule's ("Watchlist: <name>"), are unique per organization.
    await flush_or_conflict(
        session,
        Conflict(
            f"a watchlist (or a rule) named {name!r} exists already",
            code="WATCHLIST_NAME_TAKEN",
            details={"field": "name"},
        ),
    )


async def get_watchlist(
    session: AsyncSession, principal: Principal, watchlist_id: uuid.UUID
) -> Watchlist:
    """One watchlist of the caller's organization."""
    found = await session.scalar(
        select(Watchlist).where(
            Watchlist.id == watchlist_id, Watchlist.organization_id == principal.org_id
        )
    )
    if found is None:
        raise _not_found()
    return found


async def _count(session: AsyncSession, watchlist_id: uuid.UUID) -> int:
    return int(
        await session.scalar(
            select(func.count()).where(WatchlistEntry.watchlist_id == watchlist_id)
        )
        or 0
    )


async def create_watchlist(
    session: AsyncSession, principal: Principal, *, data: WatchlistIn
) -> WatchlistOut:
    """A new, empty watchlist and its rule (managers)."""
    principal.require(Role.MANAGER)
    watchlist = Watchlist(
        id=uuid.uuid4(),
        organization_id=principal.org_id,
        name=data.name,
        description=data.description,
        severity=data.severity.value,
        min_confidence=data.min_confidence,
        enabled=data.enabled,
    )
    rule = Rule(
        id=uuid.uuid4(),
        organization_id=principal.org_id,
        name=RULE_PREFIX + data.name,
        description=f"Alerts on reads of plates of the watchlist {data.name!r}.",
        condition=_rule_condition(watchlist.id),
        duration_s=0,
        severity=data.severity.value,
        enabled=data.enabled,
    )
    session.add(rule)
    await _flush_named(session, data.name)
    watchlist.rule_id = rule.id
    session.add(watchlist)
    await _flush_named(session, data.name)
    _audit(session, principal, "watchlist.create", watchlist)
    await session.commit()
    return watchlist_out(watchlist, 0)


async def watchlist_detail(
    session: AsyncSession, principal: Principal, watchlist_id: uuid.UUID
) -> WatchlistDetailOut:
    """A watchlist with its entries, by plate."""
    watchlist = await get_watchlist(session, principal, watchlist_id)
    entries = (
        await session.scalars(
            select(WatchlistEntry)
            .where(WatchlistEntry.watchlist_id == watchlist.id)
            .order_by(WatchlistEntry.plate_key, WatchlistEntry.id)
        )
    ).all()
    return WatchlistDetailOut(
        **watchlist_out(watchlist, len(entries)).model_dump(),
        entry_list=[EntryOut.model_validate(e) for e in entries],
    )


async def update_watchlist(
    session: AsyncSession,
    principal: Principal,
    bus: AlertBus,
    watchlist_id: uuid.UUID,
    *,
    data: WatchlistPatch,
) -> WatchlistOut:
    """Change a watchlist (managers); disabling clears its open alerts."""
    principal.require(Role.MANAGER)
    watchlist = await get_watchlist(session, principal, watchlist_id)
    given = data.model_dump(mode="json", exclude_unset=True, exclude_none=True)
    rule = await session.get(Rule, watchlist.rule_id) if watchlist.rule_id else None
    changes: list[AlertChange] = []
    if given.get("enabled") is False and watchlist.enabled and rule is not None:
        changes = await alerts.close_for_rule(session, rule, "rule_disabled")
    for field, value in given.items():
        setattr(watchlist, field, value)
    if rule is not None:
        rule.name = RULE_PREFIX + watchlist.name
        rule.severity = watchlist.severity
        rule.enabled = watchlist.enabled
    await _flush_named(session, watchlist.name)
    _audit(session, principal, "watchlist.update", watchlist, changed=sorted(given))
    await session.commit()
    bus.committed(changes)
    return watchlist_out(watchlist, await _count(session, watchlist.id))


async def delete_watchlist(
    session: AsyncSession, principal: Principal, bus: AlertBus, watchlist_id: uuid.UUID
) -> None:
    """Delete a watchlist, its entries and its rule (managers); its open alerts are cleared,
    past alerts stay."""
    principal.require(Role.MANAGER)
    watchlist = await get_watchlist(session, principal, watchlist_id)
    rule = await session.get(Rule, watchlist.rule_id) if watchlist.rule_id else None
    changes: list[AlertChange] = []
    if rule is not None:
        changes = await alerts.close_for_rule(session, rule, "rule_deleted")
        await session.delete(rule)
    _audit(session, principal, "watchlist.delete", watchlist)
    await session.delete(watchlist)
    await session.commit()
    bus.committed(changes)


async def add_entries(
    session: AsyncSession,
    principal: Principal,
    watchlist_id: uuid.UUID,
    entries: list[EntryIn],
) -> EntriesAdded:
    """Add plates (operators), normalised; a plate whose key the list holds already, or
    that the request gives twice, is answered under duplicates and not added."""
    principal.require(Role.OPERATOR)
    watchlist = await get_watchlist(session, principal, watchlist_id)
    if len(entries) > MAX_ENTRIES_PER_REQUEST:
        raise Invalid(
            f"at most {MAX_ENTRIES_PER_REQUEST} entries at once",
            code="TOO_MANY_ENTRIES",
            details={"field": "entries", "max": MAX_ENTRIES_PER_REQUEST},
        )
    keyed: list[tuple[EntryIn, str]] = []
    for index, entry in enumerate(entries):
        key = normalize(entry.plate).plate_key
        if not key:
            raise Invalid(
                f"entry {index}: the plate holds no letters or digits",
                code="INVALID_PLATE",
                details={"field": "plate", "index": index},
            )
        keyed.append((entry, key))
    held = set(
        await session.scalars(
            select(WatchlistEntry.plate_key).where(
                WatchlistEntry.watchlist_id == watchlist.id,
                WatchlistEntry.plate_key.in_(sorted({k for _, k in keyed})),
            )
        )
    )
    added: list[WatchlistEntry] = []
    duplicates: list[str] = []
    for entry, key in keyed:
        if key in held:
            duplicates.append(entry.plate)
            continue
        held.add(key)
        row = WatchlistEntry(
            id=uuid.uuid4(),
            organization_id=watchlist.organization_id,
            watchlist_id=watchlist.id,
            plate=entry.plate,
            plate_key=key,
            note=entry.note,
        )
        session.add(row)
        added.append(row)
    # Two requests adding one plate at once: the unique (list, key) refuses the second.
    await flush_or_conflict(
        session,
        Conflict(
            "a plate was added to this list meanwhile; send the request again",
            code="WATCHLIST_ENTRY_CONFLICT",
        ),
    )
    if added:
        watchlist.updated_at = utcnow()
        _audit(
            session,
            principal,
            "watchlist.entries.add",
            watchlist,
            plates=[e.plate for e in added][:100],
            count=len(added),
        )
    await session.commit()
    return EntriesAdded(added=[EntryOut.model_validate(e) for e in added], duplicates=duplicates)


def parse_csv(content: bytes) -> list[EntryIn]:
    """Entries of a CSV file: plate[,note] per line; a first line "plate,..." is a header."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the file is not UTF-8 text", code="INVALID_CSV") from None
    entries: list[EntryIn] = []
    for line, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells):
            continue
        if line == 1 and cells[0].casefold() == "plate":
            continue
        if len(entries) >= MAX_ENTRIES_PER_REQUEST:
            raise Invalid(
                f"at most {MAX_ENTRIES_PER_REQUEST} entries per file",
                code="TOO_MANY_ENTRIES",
                details={"line": line, "max": MAX_ENTRIES_PER_REQUEST},
            )
        note = cells[1] if len(cells) > 1 else ""
        if not (0 < len(cells[0]) <= MAX_PLATE) or len(note) > 500:
            raise Invalid(
                f"line {line}: a plate of 1-{MAX_PLATE} characters and a note of at most 500",
                code="INVALID_CSV",
                details={"line": line},
            )
        entries.append(EntryIn(plate=cells[0], note=note))
    if not entries:
        raise Invalid("the file holds no plates", code="INVALID_CSV")
    return entries


async def import_entries(
    session: AsyncSession, principal: Principal, watchlist_id: uuid.UUID, content: bytes
) -> EntriesAdded:
    """Add the plates of a CSV file (operators); see parse_csv and add_entries."""
    principal.require(Role.OPERATOR)
    await get_watchlist(session, principal, watchlist_id)  # 404 before the file's errors
    return await add_entries(session, principal, watchlist_id, parse_csv(content))


async def delete_entry(
    session: AsyncSession, principal: Principal, watchlist_id: uuid.UUID, entry_id: uuid.UUID
) -> None:
    """Remove a plate from a watchlist (operators)."""
    principal.require(Role.OPERATOR)
    watchlist = await get_watchlist(session, principal, watchlist_id)
    entry = await session.scalar(
        select(WatchlistEntry).where(
            WatchlistEntry.id == entry_id, WatchlistEntry.watchlist_id == watchlist.id
        )
    )
    if entry is None:
        raise NotFound("watchlist entry not found", code="WATCHLIST_ENTRY_NOT_FOUND")
    _audit(session, principal, "watchlist.entries.delete", watchlist, plate=entry.plate)
    await session.delete(entry)
    await session.commit()
