"""The product catalogue: managers write, everyone in the organization (drivers too) reads."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.db import flush_or_conflict, utcnow
from fleetcore.errors import Conflict, NotFound
from fleetcore.pagination import page_of, paginate
from fleetcore.vending.catalog_schemas import ProductIn, ProductPatch
from fleetcore.vending.models import PickLine, PlanogramSlot, Product, Sale

_FIELDS = ("name", "sku", "ean", "category", "unit_cost", "default_price", "case_size")


def sku_taken() -> Conflict:
    """The error for a SKU another product of the organization has (archived ones too)."""
    return Conflict("this SKU is already in use", code="SKU_TAKEN", details={"field": "sku"})


async def get_product(
    session: AsyncSession, principal: Principal, product_id: uuid.UUID
) -> Product:
    """A product of the caller's organization (archived included), or 404."""
    product = await session.scalar(
        select(Product).where(Product.id == product_id, Product.organization_id == principal.org_id)
    )
    if product is None:
        raise NotFound("product not found", code="PRODUCT_NOT_FOUND")
    return product


async def _check_sku_free(
    session: AsyncSession, org_id: uuid.UUID, sku: str | None, exclude: uuid.UUID | None = None
) -> None:
    if sku is None:
        return
    query = select(Product.id).where(Product.organization_id == org_id, Product.sku == sku)
    if exclude is not None:
        query = query.where(Product.id != exclude)
    if await session.scalar(query.limit(1)):
        raise sku_taken()


def _record(
    session: AsyncSession, principal: Principal, action: str, product: Product, **details: Any
) -> None:
    audit.record(
        session,
        action=action,
        actor=principal,
        organization_id=product.organization_id,
        target_type="vending_product",
        target_id=product.id,
        details={"name": product.name, "sku": product.sku, **details},
    )


async def create_product(
    session: AsyncSession, principal: Principal, *, data: ProductIn
) -> Product:
    """Add a product (managers); 409 SKU_TAKEN for a SKU in use."""
    principal.require(Role.MANAGER)
    await _check_sku_free(session, principal.org_id, data.sku)
    product = Product(organization_id=principal.org_id, **data.model_dump())
    session.add(product)
    # The (organization_id, sku) unique constraint decides between two concurrent creates.
    await flush_or_conflict(session, sku_taken())
    _record(session, principal, "vending.product.create", product)
    await session.commit()
    return product


async def list_products(
    session: AsyncSession,
    principal: Principal,
    *,
    q: str | None,
    category: str | None,
    include_archived: bool,
    cursor: str | None,
    limit: int,
) -> tuple[list[Product], str | None]:
    """One page of the organization's products by name; q searches name, SKU and EAN."""
    query = select(Product).where(Product.organization_id == principal.org_id)
    if not include_archived:
        query = query.where(Product.archived_at.is_(None))
    if category is not None:
        query = query.where(Product.category == category)
    if q:
        pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        query = query.where(
            or_(
                Product.name.ilike(pattern, escape="\\"),
                Product.sku.ilike(pattern, escape="\\"),
                Product.ean.ilike(pattern, escape="\\"),
            )
        )
    query = paginate(query, sort=Product.name, id_column=Product.id, cursor=cursor, limit=limit)
    rows = (await session.scalars(query)).all()
    return page_of(rows, limit=limit, sort_attr="name")


async def update_product(
    session: AsyncSession, principal: Principal, product_id: uuid.UUID, *, data: ProductPatch
) -> Product:
    """Change the fields sent (managers); null clears the optional ones."""
    principal.require(Role.MANAGER)
    product = await get_product(session, principal, product_id)
    sent = data.model_fields_set
    if "sku" in sent and data.sku != product.sku:
        await _check_sku_free(session, product.organization_id, data.sku, exclude=product.id)
    changed = [f for f in _FIELDS if f in sent and getattr(data, f) != getattr(product, f)]
    if not changed:
        return product
    for name in changed:
        setattr(product, name, getattr(data, name))
    product.updated_at = utcnow()
    await flush_or_conflict(session, sku_taken())
    _record(session, principal, "vending.product.update", product, fields=changed)
    await session.commit()
    return product


async def product_referenced(session: AsyncSession, product_id: uuid.UUID) -> bool:
    """True if a planogram version, a sale or a pick line names the product."""
    for column in (PlanogramSlot.product_id, Sale.product_id, PickLine.product_id):
        if await session.scalar(select(exists().where(column == product_id))):
            return True
    return False


async def delete_product(
    session: AsyncSession, principal: Principal, product_id: uuid.UUID
) -> tuple[Product, str]:
    """Archive a product history refers to (sales stay attributable), else delete it."""
    principal.require(Role.MANAGER)
    product = await get_product(session, principal, product_id)
    if await product_referenced(session, product.id):
        outcome = "archived"
        if product.archived_at is None:
            product.archived_at = utcnow()
            product.updated_at = product.archived_at
        _record(session, principal, "vending.product.archive", product)
    else:
        outcome = "deleted"
        await session.delete(product)
        # A planogram naming the product since the check above makes the RESTRICT key fail.
        await flush_or_conflict(
            session, Conflict("the product is in use; retry", code="PRODUCT_IN_USE")
        )
        _record(session, principal, "vending.product.delete", product)
    await session.commit()
    return product, outcome
