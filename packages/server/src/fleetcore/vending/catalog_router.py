"""The vending catalogue API: products, machines and cabinets, planograms, suggestions.

Reads a driver may make take AnyPrincipalDep and load through vending.scope (their routes'
machines only; the whole product catalogue); every write takes PrincipalDep (drivers: 403).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, status

from fleetcore.auth.deps import AnyPrincipalDep, PrincipalDep
from fleetcore.deps import SessionDep
from fleetcore.devices.schemas import SearchText
from fleetcore.pagination import CursorQuery, LimitQuery, Page
from fleetcore.vending import machines, planograms, products, suggestion_service
from fleetcore.vending.catalog_schemas import (
    CabinetIn,
    CabinetOut,
    CabinetPatch,
    Category,
    MachineDetail,
    MachineIn,
    MachineOut,
    MachinePatch,
    PlanogramDiff,
    PlanogramIn,
    PlanogramOut,
    PlanogramSummary,
    ProductDeleted,
    ProductIn,
    ProductOut,
    ProductPatch,
    SuggestionApply,
    SuggestionOut,
)

router = APIRouter(prefix="/api/v1/vending", tags=["vending"])


# -- products ----------------------------------------------------------------------------


@router.post("/products", status_code=status.HTTP_201_CREATED, summary="Add a product")
async def create_product(
    body: ProductIn, session: SessionDep, principal: PrincipalDep
) -> ProductOut:
    """Managers; 409 SKU_TAKEN when another product of the organization has the SKU."""
    return ProductOut.model_validate(await products.create_product(session, principal, data=body))


@router.get("/products", summary="List products")
async def list_products(
    session: SessionDep,
    principal: AnyPrincipalDep,
    q: Annotated[SearchText | None, Query(description="in name, SKU or EAN")] = None,
    category: Annotated[Category | None, Query()] = None,
    include_archived: bool = False,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[ProductOut]:
    """The organization's catalogue by name (drivers too)."""
    rows, next_cursor = await products.list_products(
        session,
        principal,
        q=q,
        category=category,
        include_archived=include_archived,
        cursor=cursor,
        limit=limit,
    )
    return Page(items=[ProductOut.model_validate(p) for p in rows], next_cursor=next_cursor)


@router.get("/products/{product_id:uuid}", summary="Get a product")
async def get_product(
    product_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> ProductOut:
    """Archived products too (past sales name them)."""
    return ProductOut.model_validate(await products.get_product(session, principal, product_id))


@router.patch("/products/{product_id:uuid}", summary="Change a product")
async def update_product(
    product_id: uuid.UUID, body: ProductPatch, session: SessionDep, principal: PrincipalDep
) -> ProductOut:
    """Managers; only the fields sent change."""
    product = await products.update_product(session, principal, product_id, data=body)
    return ProductOut.model_validate(product)


@router.delete("/products/{product_id:uuid}", summary="Delete or archive a product")
async def delete_product(
    product_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> ProductDeleted:
    """Managers. A product a planogram, sale or pick line names is archived, not deleted."""
    product, outcome = await products.delete_product(session, principal, product_id)
    return ProductDeleted(id=product.id, outcome="archived" if outcome == "archived" else "deleted")


# -- machines and cabinets ---------------------------------------------------------------


@router.post("/machines", status_code=status.HTTP_201_CREATED, summary="Make a device a machine")
async def create_machine(
    body: MachineIn, session: SessionDep, principal: PrincipalDep
) -> MachineDetail:
    """Managers; 404 for a device not of the organization, 409 MACHINE_EXISTS if it is one."""
    machine = await machines.create_machine(session, principal, data=body)
    return await machines.machine_detail(session, principal, machine.device_id)


@router.get("/machines", summary="List vending machines")
async def list_machines(
    session: SessionDep,
    principal: AnyPrincipalDep,
    route_id: uuid.UUID | None = None,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[MachineOut]:
    """The machines the caller may see (a driver: their routes')."""
    items, next_cursor = await machines.list_machines(
        session, principal, route_id=route_id, cursor=cursor, limit=limit
    )
    return Page(items=items, next_cursor=next_cursor)


@router.get("/machines/{device_id:uuid}", summary="Get a machine with its slots and stock")
async def get_machine(
    device_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> MachineDetail:
    """Cabinets, their current planogram slots and the estimated stock of each."""
    return await machines.machine_detail(session, principal, device_id)


@router.patch("/machines/{device_id:uuid}", summary="Change a machine")
async def update_machine(
    device_id: uuid.UUID, body: MachinePatch, session: SessionDep, principal: PrincipalDep
) -> MachineDetail:
    """Managers; only the fields sent change."""
    await machines.update_machine(session, principal, device_id, data=body)
    return await machines.machine_detail(session, principal, device_id)


@router.delete(
    "/machines/{device_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Remove a device's vending side",
)
async def delete_machine(
    device_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Managers; the device stays. 409 MACHINE_HAS_HISTORY once it has DEX audits."""
    await machines.delete_machine(session, principal, device_id)


@router.post(
    "/machines/{device_id:uuid}/cabinets",
    status_code=status.HTTP_201_CREATED,
    summary="Add a cabinet",
)
async def add_cabinet(
    device_id: uuid.UUID, body: CabinetIn, session: SessionDep, principal: PrincipalDep
) -> CabinetOut:
    """Managers; 409 CABINET_NAME_TAKEN for a name the machine has."""
    cabinet = await machines.add_cabinet(session, principal, device_id, data=body)
    return CabinetOut.model_validate(cabinet)


@router.patch("/cabinets/{cabinet_id:uuid}", summary="Rename or reorder a cabinet")
async def update_cabinet(
    cabinet_id: uuid.UUID, body: CabinetPatch, session: SessionDep, principal: PrincipalDep
) -> CabinetOut:
    """Managers."""
    cabinet = await machines.update_cabinet(session, principal, cabinet_id, data=body)
    return CabinetOut.model_validate(cabinet)


@router.delete(
    "/cabinets/{cabinet_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a cabinet",
)
async def delete_cabinet(
    cabinet_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> None:
    """Managers; 409 CABINET_HAS_HISTORY once sales or service orders name it."""
    await machines.delete_cabinet(session, principal, cabinet_id)


# -- planograms --------------------------------------------------------------------------


@router.put("/cabinets/{cabinet_id:uuid}/planogram", summary="Set a cabinet's planogram")
async def put_planogram(
    cabinet_id: uuid.UUID, body: PlanogramIn, session: SessionDep, principal: PrincipalDep
) -> PlanogramOut:
    """Managers. Makes the next version; earlier versions stay as they were."""
    planogram = await planograms.create_version(
        session,
        principal,
        cabinet_id,
        data=planograms.NewVersion(slots=body.slots, note=body.note),
    )
    return await planograms.planogram_out(session, planogram)


@router.get("/cabinets/{cabinet_id:uuid}/planogram", summary="A cabinet's current planogram")
async def get_current_planogram(
    cabinet_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> PlanogramOut:
    """404 PLANOGRAM_NOT_FOUND before the first version."""
    return await planograms.current_planogram(session, principal, cabinet_id)


@router.get("/cabinets/{cabinet_id:uuid}/planograms", summary="A cabinet's planogram history")
async def list_planograms(
    cabinet_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    cursor: CursorQuery = None,
    limit: LimitQuery = 50,
) -> Page[PlanogramSummary]:
    """Every version, newest first."""
    rows, next_cursor = await planograms.history(
        session, principal, cabinet_id, cursor=cursor, limit=limit
    )
    return Page(items=[planograms.summary(p) for p in rows], next_cursor=next_cursor)


@router.get("/planograms/{planogram_id:uuid}", summary="One planogram version")
async def get_planogram(
    planogram_id: uuid.UUID, session: SessionDep, principal: AnyPrincipalDep
) -> PlanogramOut:
    """With its slots and their products."""
    planogram = await planograms.get_planogram(session, principal, planogram_id)
    return await planograms.planogram_out(session, planogram)


@router.get("/planograms/{planogram_id:uuid}/diff", summary="What a version changed")
async def diff_planogram(
    planogram_id: uuid.UUID,
    session: SessionDep,
    principal: AnyPrincipalDep,
    against: uuid.UUID | None = None,
) -> PlanogramDiff:
    """Added, removed and changed slots against `against` (default: the previous version)."""
    return await planograms.diff(session, principal, planogram_id, against_id=against)


# -- suggestions -------------------------------------------------------------------------


@router.get("/cabinets/{cabinet_id:uuid}/suggestion", summary="A suggested planogram")
async def get_suggestion(
    cabinet_id: uuid.UUID, session: SessionDep, principal: PrincipalDep
) -> SuggestionOut:
    """Advice from sales velocity, sold-out visits and margin; each change says why.
    status insufficient_data lists what is missing instead of guessing."""
    return await suggestion_service.cabinet_suggestion(session, principal, cabinet_id)


@router.post(
    "/cabinets/{cabinet_id:uuid}/suggestion/apply",
    status_code=status.HTTP_201_CREATED,
    summary="Apply a suggestion",
)
async def apply_suggestion(
    cabinet_id: uuid.UUID, body: SuggestionApply, session: SessionDep, principal: PrincipalDep
) -> PlanogramOut:
    """Managers. A new version (source suggestion, the reasons as its note); 409 when the
    current version is no longer based_on_version."""
    planogram = await suggestion_service.apply_suggestion(
        session,
        principal,
        cabinet_id,
        based_on_version=body.based_on_version,
        change_ids=body.changes,
    )
    return await planograms.planogram_out(session, planogram)
