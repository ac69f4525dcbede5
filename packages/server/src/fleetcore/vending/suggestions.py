"""Planogram suggestions: advice from sales velocity, sold-out frequency, capacity and margin.

`suggest` is pure (plain data in, explained changes out) and deterministic: every ordering
ends on the slot code or the product id. It never adds capacity: a fast seller that sells
out gets facings moved from slow slots of the same cabinet. vending.suggestion_service
loads the numbers; applying a suggestion makes a new planogram version, never an edit.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

MAX_CAPACITY = 999


@dataclass(frozen=True, slots=True)
class Rules:
    """The thresholds of the advice (one place, so a reason's numbers match them)."""

    window_days: int = 28
    min_sales_days: int = 14
    min_visits: int = 3
    last_visits: int = 7
    sold_out_share: float = 0.5  # sold out at this share of visits or more: a fast seller
    dead_per_day: float = 0.1  # selling less than this a day: offer another product
    safety: float = 1.2  # stock to cover the days between visits, plus this margin
    min_capacity: int = 2  # a slow slot keeps at least this many facings
    default_interval_days: float = 7.0


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """A slot as a planogram has it."""

    slot: str
    product_id: uuid.UUID | None
    capacity: int
    par_level: int
    price: Decimal | None


@dataclass(frozen=True, slots=True)
class SlotStats:
    """What a slot did: units sold in the window, visits it was found sold out at."""

    units: int = 0
    sold_out_visits: int = 0
    sold_out_now: bool = False


@dataclass(frozen=True, slots=True)
class ProductInfo:
    """A product of the catalogue, as the advice needs it."""

    id: uuid.UUID
    name: str
    category: str
    unit_cost: Decimal | None
    default_price: Decimal | None
    archived: bool = False

    @property
    def margin(self) -> Decimal | None:
        """default price - unit cost, when both are known."""
        if self.unit_cost is None or self.default_price is None:
            return None
        return self.default_price - self.unit_cost


@dataclass(frozen=True, slots=True)
class CabinetData:
    """Everything `suggest` looks at."""

    slots: list[SlotPlan]
    stats: dict[str, SlotStats]
    products: dict[uuid.UUID, ProductInfo]
    sales_days: float  # days of the window covered by sales data
    visits: int  # service visits among the last `Rules.last_visits`
    days_between_visits: float | None


@dataclass(frozen=True, slots=True)
class Change:
    """One suggested change and why."""

    id: str
    kind: Literal["move", "par", "swap"]
    slot: str
    reason: str
    from_slot: str | None = None
    amount: int | None = None
    par_level: int | None = None
    product_id: uuid.UUID | None = None
    price: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Suggestion:
    """The advice: ok with changes (maybe none), or insufficient_data with what is missing."""

    status: Literal["ok", "insufficient_data"]
    missing: list[str]
    changes: list[Change]
    slots: list[SlotPlan]
    velocity: dict[str, float] = field(default_factory=dict)


def _missing(data: CabinetData, rules: Rules) -> list[str]:
    missing = []
    if not data.slots:
        missing.append("the cabinet has no planogram (or no slots) yet")
    if data.sales_days < rules.min_sales_days:
        missing.append(f"sales: {data.sales_days:.0f} days of data, {rules.min_sales_days} needed")
    if data.visits < rules.min_visits:
        missing.append(f"visits: {data.visits} service visits recorded, {rules.min_visits} needed")
    return missing


def suggest(data: CabinetData, rules: Rules = Rules()) -> Suggestion:
    """Explained changes to a cabinet's slots, or what data are missing to make them."""
    missing = _missing(data, rules)
    if missing:
        return Suggestion("insufficient_data", missing, [], list(data.slots))
    interval = data.days_between_visits or rules.default_interval_days
    stats = {s.slot: data.stats.get(s.slot, SlotStats()) for s in data.slots}
    velocity = {s.slot: stats[s.slot].units / data.sales_days for s in data.slots}
    need = {code: math.ceil(v * interval * rules.safety) for code, v in velocity.items()}
    stocked = sorted((s for s in data.slots if s.product_id is not None), key=lambda s: s.slot)

    def share(slot: SlotPlan) -> float:
        return stats[slot.slot].sold_out_visits / data.visits

    receivers = sorted(
        (s for s in stocked if share(s) >= rules.sold_out_share),
        key=lambda s: (-share(s), -velocity[s.slot], s.slot),
    )
    donors = sorted(
        (
            s
            for s in stocked
            if stats[s.slot].sold_out_visits == 0 and not stats[s.slot].sold_out_now
        ),
        key=lambda s: (velocity[s.slot], s.slot),
    )
    spare = {
        s.slot: s.capacity - max(need[s.slot], rules.min_capacity, 1)
        for s in donors
        if s.capacity > max(need[s.slot], rules.min_capacity, 1)
    }
    changes: list[Change] = []
    capacity = {s.slot: s.capacity for s in data.slots}
    for receiver in receivers:
        code = receiver.slot
        wanted = min(max(need[code] - receiver.capacity, 1), MAX_CAPACITY - receiver.capacity)
        sold = stats[code].sold_out_visits
        for donor in donors:
            if wanted <= 0:
                break
            amount = min(wanted, spare.get(donor.slot, 0))
            if amount <= 0:
                continue
            spare[donor.slot] -= amount
            wanted -= amount
            before_to, before_from = capacity[code], capacity[donor.slot]
            capacity[code] += amount
            capacity[donor.slot] -= amount
            changes.append(
                Change(
                    id=f"move-{donor.slot}-{code}",
                    kind="move",
                    slot=code,
                    from_slot=donor.slot,
                    amount=amount,
                    reason=(
                        f"slot {code} sold out {sold} of the last {data.visits} visits"
                        f" ({velocity[code]:.2f} a day): give it {amount} more"
                        f" facing{'s' if amount > 1 else ''} (capacity {before_to} →"
                        f" {capacity[code]}) from slot {donor.slot}, which sells"
                        f" {velocity[donor.slot]:.2f} a day (capacity {before_from} →"
                        f" {capacity[donor.slot]})"
                    ),
                )
            )
    changes.extend(_par_changes(data, capacity, velocity, need, interval))
    changes.extend(_swaps(data, stats, velocity, rules))
    return Suggestion("ok", [], changes, apply_changes(data.slots, changes), velocity)


def _par_changes(
    data: CabinetData,
    capacity: dict[str, int],
    velocity: dict[str, float],
    need: dict[str, int],
    interval: float,
) -> list[Change]:
    changes = []
    for slot in sorted(data.slots, key=lambda s: s.slot):
        if slot.product_id is None:
            continue
        par = min(capacity[slot.slot], slot.par_level)  # a move may have lowered it
        target = min(capacity[slot.slot], need[slot.slot])
        if target > par:
            changes.append(
                Change(
                    id=f"par-{slot.slot}",
                    kind="par",
                    slot=slot.slot,
                    par_level=target,
                    reason=(
                        f"slot {slot.slot} sells {velocity[slot.slot]:.2f} a day and visits"
                        f" are {interval:.1f} days apart: raise par {slot.par_level} →"
                        f" {target} to cover them"
                    ),
                )
            )
    return changes


def _swaps(
    data: CabinetData, stats: dict[str, SlotStats], velocity: dict[str, float], rules: Rules
) -> list[Change]:
    used = {s.product_id for s in data.slots if s.product_id is not None}
    changes = []
    for slot in sorted(data.slots, key=lambda s: s.slot):
        current = data.products.get(slot.product_id) if slot.product_id else None
        if current is None or velocity[slot.slot] >= rules.dead_per_day:
            continue
        if stats[slot.slot].sold_out_visits or stats[slot.slot].sold_out_now:
            continue  # it sold out: slow because empty, not because unwanted
        candidates = sorted(
            (
                p
                for p in data.products.values()
                if p.category == current.category
                and p.id not in used
                and not p.archived
                and p.margin is not None
            ),
            key=lambda p: (-(p.margin or 0), p.name, str(p.id)),
        )
        if not candidates:
            continue
        best = candidates[0]
        used.add(best.id)
        units = stats[slot.slot].units
        changes.append(
            Change(
                id=f"swap-{slot.slot}",
                kind="swap",
                slot=slot.slot,
                product_id=best.id,
                price=best.default_price,
                reason=(
                    f"slot {slot.slot} sold {units} of {current.name} in"
                    f" {data.sales_days:.0f} days ({velocity[slot.slot]:.2f} a day, under"
                    f" {rules.dead_per_day}): replace it with {best.name}, the best-margin"
                    f" unused product of category {current.category!r} (margin {best.margin})"
                ),
            )
        )
    return changes


def apply_changes(slots: list[SlotPlan], changes: list[Change]) -> list[SlotPlan]:
    """The slots with the changes applied in order (moves, then par levels, then swaps)."""
    by_code = {s.slot: s for s in slots}
    order = {"move": 0, "par": 1, "swap": 2}
    for change in sorted(changes, key=lambda c: order[c.kind]):
        target = by_code[change.slot]
        if change.kind == "move" and change.from_slot and change.amount:
            donor = by_code[change.from_slot]
            left = donor.capacity - change.amount
            by_code[donor.slot] = replace(
                donor, capacity=left, par_level=min(donor.par_level, left)
            )
            by_code[target.slot] = replace(target, capacity=target.capacity + change.amount)
        elif change.kind == "par" and change.par_level is not None:
            by_code[target.slot] = replace(target, par_level=min(change.par_level, target.capacity))
        elif change.kind == "swap":
            price = change.price if change.price is not None else target.price
            by_code[target.slot] = replace(target, product_id=change.product_id, price=price)
    return [by_code[s.slot] for s in slots]
