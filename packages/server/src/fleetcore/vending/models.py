"""Tables of the vending module.

A vending machine is a device (`vending_machines` adds what vending needs to `devices`) with
cabinets; a cabinet's slots come from its current planogram version. Audits are stored as
received (raw bytes, parse summary, warnings); sales are the differences between consecutive
accounted audits of a machine, per slot, attributed to the product the planogram had in the
slot at the time of the sale. Money is `Decimal` in Python and an exact integer of
1/10,000 currency units in the database (SQLite has no decimal type).
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, BigIntPK, UTCDateTime, new_id, utcnow

MONEY_SCALE = 10_000
JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Money(TypeDecorator[Decimal]):
    """A Decimal stored exactly as an integer of 1/10,000 units (sums stay exact in SQL)."""

    impl = BigInteger
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        return int((Decimal(value) * MONEY_SCALE).to_integral_value())

    def process_result_value(self, value: int | None, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return (Decimal(int(value)) / MONEY_SCALE).normalize() + Decimal("0.00")


class Product(Base):
    """Something a machine sells."""

    __tablename__ = "vending_products"
    __table_args__ = (UniqueConstraint("organization_id", "sku"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    sku: Mapped[str | None] = mapped_column(String(64))
    ean: Mapped[str | None] = mapped_column(String(14))
    category: Mapped[str] = mapped_column(String(64), default="")
    unit_cost: Mapped[Decimal | None] = mapped_column(Money)
    default_price: Mapped[Decimal | None] = mapped_column(Money)
    case_size: Mapped[int | None] = mapped_column(Integer)  # pick lists round up to whole cases
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Route(Base):
    """A group of machines one driver serves in one trip."""

    __tablename__ = "vending_routes"
    __table_args__ = (UniqueConstraint("organization_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(2000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class RouteDriver(Base):
    """A driver assigned to a route: the only routes a driver sees."""

    __tablename__ = "vending_route_drivers"

    route_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_routes.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class Machine(Base):
    """What vending adds to a device: route, expected DEX serial, currency, audit state."""

    __tablename__ = "vending_machines"

    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    route_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vending_routes.id", ondelete="SET NULL"), index=True
    )
    route_position: Mapped[int] = mapped_column(Integer, default=0)  # visit order on the route
    location: Mapped[str] = mapped_column(String(200), default="")
    # ID101 of the machine's audits; None = learnt from the first accepted audit.
    dex_serial: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str | None] = mapped_column(String(3))
    last_audit_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cabinet(Base):
    """One cabinet of a machine (a snack tower, a drinks fridge)."""

    __tablename__ = "vending_cabinets"
    __table_args__ = (UniqueConstraint("device_id", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_machines.device_id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(64))
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Planogram(Base):
    """One version of a cabinet's slot assignment; the highest version is current."""

    __tablename__ = "vending_planograms"
    __table_args__ = (UniqueConstraint("cabinet_id", "version"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    cabinet_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_cabinets.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(Integer)
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    source: Mapped[str] = mapped_column(String(16), default="manual")  # manual | suggestion
    note: Mapped[str] = mapped_column(String(2000), default="")
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PlanogramSlot(Base):
    """A slot (DEX selection code) in one planogram version."""

    __tablename__ = "vending_planogram_slots"

    planogram_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_planograms.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[str] = mapped_column(String(16), primary_key=True)
    product_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vending_products.id", ondelete="RESTRICT"), index=True
    )
    capacity: Mapped[int] = mapped_column(Integer)
    par_level: Mapped[int] = mapped_column(Integer)
    price: Mapped[Decimal | None] = mapped_column(Money)


class SlotStock(Base):
    """What is known of a slot's stock: the level at the last fill and what sold since."""

    __tablename__ = "vending_slot_stock"

    cabinet_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_cabinets.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[str] = mapped_column(String(16), primary_key=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    fill_level: Mapped[int | None] = mapped_column(Integer)  # None: never filled through us
    filled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sold_since_fill: Mapped[int] = mapped_column(Integer, default=0)
    sold_out_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # PA5 or estimate 0


class Audit(Base):
    """One DEX transaction set as received, with what the parser and accounting made of it.

    status: accepted (accounted), damaged (held until a manager accepts it), foreign (the
    serial is another machine's: refused), superseded (a manager rejected it).
    """

    __tablename__ = "vending_audits"
    __table_args__ = (
        UniqueConstraint("device_id", "content_hash", "set_index"),
        Index("ix_vending_audits_device_id_read_at", "device_id", "read_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_machines.device_id", ondelete="CASCADE")
    )
    content_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the whole file
    set_index: Mapped[int] = mapped_column(Integer, default=0)
    source: Mapped[str] = mapped_column(String(16))  # http | mqtt | upload | simulator
    uploaded_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    read_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the file's time, else received
    machine_serial: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # Per selection counters and machine totals as parsed (see vending.accounting).
    summary: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    accounted: Mapped[bool] = mapped_column(Boolean, default=False)
    reviewed_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    reviewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Sale(Base):
    """Sales of one slot between two accounted audits of a machine."""

    __tablename__ = "vending_sales"
    __table_args__ = (
        UniqueConstraint("audit_id", "slot"),
        Index("ix_vending_sales_org_period_end", "organization_id", "period_end"),
        Index("ix_vending_sales_device_id_period_end", "device_id", "period_end"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_machines.device_id", ondelete="CASCADE")
    )
    audit_id: Mapped[int] = mapped_column(ForeignKey("vending_audits.id", ondelete="CASCADE"))
    previous_audit_id: Mapped[int | None] = mapped_column(
        ForeignKey("vending_audits.id", ondelete="SET NULL")
    )
    cabinet_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vending_cabinets.id", ondelete="SET NULL")
    )
    slot: Mapped[str] = mapped_column(String(16))
    product_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vending_products.id", ondelete="SET NULL"), index=True
    )
    period_start: Mapped[datetime | None] = mapped_column(UTCDateTime)
    period_end: Mapped[datetime] = mapped_column(UTCDateTime)
    basis: Mapped[str] = mapped_column(String(16))  # init | reset | reinitialised
    units: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    cash_units: Mapped[int] = mapped_column(Integer, default=0)
    cash_revenue: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    cashless_units: Mapped[int] = mapped_column(Integer, default=0)
    cashless_revenue: Mapped[Decimal] = mapped_column(Money, default=Decimal(0))
    test_vends: Mapped[int] = mapped_column(Integer, default=0)
    free_vends: Mapped[int] = mapped_column(Integer, default=0)


class ServiceOrder(Base):
    """A restocking trip of a route on a date: draft → issued → in_progress → completed.

    cancelled is reachable from every state but completed. State changes are one
    conditional UPDATE on (id, state) so two drivers cannot both start or complete it.
    """

    __tablename__ = "vending_service_orders"
    __table_args__ = (Index("ix_vending_service_orders_route_id_date", "route_id", "service_date"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    route_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vending_routes.id", ondelete="CASCADE"))
    service_date: Mapped[date] = mapped_column(Date)
    state: Mapped[str] = mapped_column(String(16), default="draft")
    driver_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    note: Mapped[str] = mapped_column(String(2000), default="")
    created_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    issued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancelled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ServiceVisit(Base):
    """One machine in a service order: cash collected and when it was serviced."""

    __tablename__ = "vending_service_visits"

    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_service_orders.id", ondelete="CASCADE"), primary_key=True
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_machines.device_id", ondelete="CASCADE"), primary_key=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    cash_collected: Mapped[Decimal | None] = mapped_column(Money)
    serviced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PickLine(Base):
    """One slot to fill in a service order: planned from the estimate, filled by the driver."""

    __tablename__ = "vending_pick_lines"
    __table_args__ = (UniqueConstraint("order_id", "cabinet_id", "slot"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    order_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_service_orders.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    device_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_machines.device_id", ondelete="CASCADE")
    )
    cabinet_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("vending_cabinets.id", ondelete="CASCADE")
    )
    slot: Mapped[str] = mapped_column(String(16))
    product_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("vending_products.id", ondelete="SET NULL")
    )
    capacity: Mapped[int] = mapped_column(Integer)
    par_level: Mapped[int] = mapped_column(Integer)
    estimated_stock: Mapped[int | None] = mapped_column(Integer)  # None: unknown, fill to par
    planned: Mapped[int] = mapped_column(Integer)
    filled: Mapped[int | None] = mapped_column(Integer)
    # The estimate when the driver first recorded the fill (None: unknown), so a corrected
    # fill recomputes the slot's level from the same starting point.
    stock_before: Mapped[int | None] = mapped_column(Integer)
    sold_out: Mapped[bool] = mapped_column(Boolean, default=False)  # found empty at the visit
    filled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    filled_by: Mapped[uuid.UUID | None] = mapped_column(Uuid)
