"""A service order as read: its pick list for the warehouse (per product) and for the
driver (per machine in visit order, per cabinet, per slot)."""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.auth.principal import Principal
from fleetcore.devices.models import Device
from fleetcore.vending import picklist
from fleetcore.vending.models import Cabinet, Machine, PickLine, Product, ServiceVisit
from fleetcore.vending.scope import get_order
from fleetcore.vending.service_schemas import (
    CabinetPick,
    LineOut,
    MachinePick,
    OrderDetail,
    OrderOut,
    ProductTotal,
    VisitOut,
)


def slot_key(slot: str) -> tuple[object, ...]:
    """Natural order of slot codes: A2 before A10."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", slot))


def line_out(line: PickLine) -> LineOut:
    """A pick line as answered."""
    return LineOut.model_validate(
        {
            **{name: getattr(line, name) for name in LineOut.model_fields if name != "stock_known"},
            "stock_known": line.estimated_stock is not None,
        }
    )


async def order_detail(
    session: AsyncSession, principal: Principal, order_id: uuid.UUID
) -> OrderDetail:
    """The order, its visits and its pick list both ways."""
    order = await get_order(session, principal, order_id)
    visits = list(
        await session.scalars(
            select(ServiceVisit)
            .where(ServiceVisit.order_id == order.id)
            .order_by(ServiceVisit.position)
        )
    )
    lines = list(await session.scalars(select(PickLine).where(PickLine.order_id == order.id)))
    device_ids = [v.device_id for v in visits]
    machines = {
        device_id: (name, location)
        for device_id, name, location in await session.execute(
            select(Machine.device_id, Device.name, Machine.location)
            .join(Device, Device.id == Machine.device_id)
            .where(Machine.device_id.in_(device_ids))
        )
    }
    cabinets = list(
        await session.scalars(
            select(Cabinet)
            .where(Cabinet.device_id.in_(device_ids))
            .order_by(Cabinet.position, Cabinet.name)
        )
    )
    product_ids = {line.product_id for line in lines if line.product_id is not None}
    products = {
        p.id: p for p in await session.scalars(select(Product).where(Product.id.in_(product_ids)))
    }
    stops = []
    for visit in visits:
        name, location = machines.get(visit.device_id, ("", ""))
        picks = []
        for cabinet in cabinets:
            if cabinet.device_id != visit.device_id:
                continue
            mine = sorted(
                (line for line in lines if line.cabinet_id == cabinet.id),
                key=lambda line: slot_key(line.slot),
            )
            if mine:
                picks.append(
                    CabinetPick(
                        cabinet_id=cabinet.id,
                        name=cabinet.name,
                        lines=[line_out(line) for line in mine],
                    )
                )
        stops.append(
            MachinePick(
                device_id=visit.device_id,
                name=name,
                location=location,
                visit=VisitOut.model_validate(visit),
                cabinets=picks,
            )
        )
    totals = picklist.product_totals(
        picklist.LineUnits(product_id=line.product_id, planned=line.planned) for line in lines
    )
    warehouse = []
    for product_id, units in totals.items():
        if units == 0:  # every line of it planned down to nothing
            continue
        product = products.get(product_id) if product_id is not None else None
        case_size = product.case_size if product else None
        warehouse.append(
            ProductTotal(
                product_id=product_id,
                name=product.name if product else None,
                sku=product.sku if product else None,
                units=units,
                case_size=case_size,
                cases=picklist.cases(units, case_size),
            )
        )
    warehouse.sort(key=lambda total: ((total.name or "").casefold(), str(total.product_id)))
    return OrderDetail(
        **OrderOut.model_validate(order).model_dump(), warehouse=warehouse, stops=stops
    )
