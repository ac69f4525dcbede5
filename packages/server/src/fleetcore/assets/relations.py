"""Typed relations between a device or asset and another, within one organization."""

from __future__ import annotations

import uuid

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.assets.models import Asset, EntityRelation
from fleetcore.assets.schemas import Direction, EntityType, RelationIn
from fleetcore.audit import service as audit
from fleetcore.auth.principal import Principal, Role
from fleetcore.devices.models import Device
from fleetcore.errors import Conflict, Invalid, NotFound
from fleetcore.pagination import paginate


async def _require_entity(
    session: AsyncSession, principal: Principal, kind: EntityType, entity_id: uuid.UUID, field: str
) -> None:
    if kind is EntityType.DEVICE:
        found = await session.scalar(
            select(Device.id).where(
                Device.id == entity_id,
                Device.organization_id == principal.org_id,
                Device.deleted_at.is_(None),
            )
        )
    else:
        found = await session.scalar(
            select(Asset.id).where(Asset.id == entity_id, Asset.organization_id == principal.org_id)
        )
    if found is None:
        raise NotFound(
            f"{kind.value} not found",
            code=f"{kind.value.upper()}_NOT_FOUND",
            details={"field": field},
        )


async def create_relation(
    session: AsyncSession, principal: Principal, *, data: RelationIn
) -> EntityRelation:
    """A relation between two entities of the caller's organization (managers)."""
    principal.require(Role.MANAGER)
    if (data.from_type, data.from_id) == (data.to_type, data.to_id):
        raise Invalid("an entity cannot relate to itself", code="RELATION_SELF")
    await _require_entity(session, principal, data.from_type, data.from_id, "from_id")
    await _require_entity(session, principal, data.to_type, data.to_id, "to_id")
    same = select(EntityRelation.id).where(
        EntityRelation.from_type == data.from_type,
        EntityRelation.from_id == data.from_id,
        EntityRelation.to_type == data.to_type,
        EntityRelation.to_id == data.to_id,
        EntityRelation.type == data.type,
    )
    duplicate = Conflict("this relation exists", code="RELATION_EXISTS")
    if existing := await session.scalar(same):
        duplicate.details = {"relation_id": str(existing)}
        raise duplicate
    relation = EntityRelation(
        organization_id=principal.org_id,
        from_type=data.from_type.value,
        from_id=data.from_id,
        to_type=data.to_type.value,
        to_id=data.to_id,
        type=data.type,
    )
    session.add(relation)
    try:
        await session.flush()
    except IntegrityError:  # a concurrent request created it first
        raise duplicate from None
    audit.record(
        session,
        action="relation.create",
        actor=principal,
        organization_id=relation.organization_id,
        target_type="relation",
        target_id=relation.id,
        details=data.model_dump(mode="json"),
    )
    await session.commit()
    return relation


async def list_relations(
    session: AsyncSession,
    principal: Principal,
    *,
    entity_type: EntityType | None,
    entity_id: uuid.UUID | None,
    direction: Direction,
    type: str | None,
    cursor: str | None,
    limit: int,
) -> list[EntityRelation]:
    """Relations of the organization, or of one entity, oldest first (one extra row)."""
    query = select(EntityRelation).where(EntityRelation.organization_id == principal.org_id)
    if (entity_type is None) != (entity_id is None):
        raise Invalid(
            "entity_type and entity_id go together",
            code="ENTITY_FILTER_INCOMPLETE",
            details={"field": "entity_id" if entity_id is None else "entity_type"},
        )
    if entity_type is not None and entity_id is not None:
        await _require_entity(session, principal, entity_type, entity_id, "entity_id")
        outgoing = and_(
            EntityRelation.from_type == entity_type, EntityRelation.from_id == entity_id
        )
        incoming = and_(EntityRelation.to_type == entity_type, EntityRelation.to_id == entity_id)
        ends = {Direction.FROM: outgoing, Direction.TO: incoming}
        query = query.where(ends.get(direction, or_(outgoing, incoming)))
    if type is not None:
        query = query.where(EntityRelation.type == type)
    query = paginate(
        query,
        sort=EntityRelation.created_at,
        id_column=EntityRelation.id,
        cursor=cursor,
        limit=limit,
    )
    return list((await session.scalars(query)).all())


async def delete_relation(
    session: AsyncSession, principal: Principal, relation_id: uuid.UUID
) -> None:
    """Remove a relation (managers)."""
    principal.require(Role.MANAGER)
    relation = await session.scalar(
        select(EntityRelation).where(
            EntityRelation.id == relation_id, EntityRelation.organization_id == principal.org_id
        )
    )
    if relation is None:
        raise NotFound("relation not found", code="RELATION_NOT_FOUND")
    audit.record(
        session,
        action="relation.delete",
        actor=principal,
        organization_id=relation.organization_id,
        target_type="relation",
        target_id=relation.id,
        details={
            "from": f"{relation.from_type}:{relation.from_id}",
            "to": f"{relation.to_type}:{relation.to_id}",
            "type": relation.type,
        },
    )
    await session.delete(relation)
    await session.commit()


async def delete_for_entity(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    entity_type: EntityType,
    entity_id: uuid.UUID,
) -> None:
    """Remove every relation from or to an entity that is being deleted (no commit)."""
    await session.execute(
        delete(EntityRelation).where(
            EntityRelation.organization_id == organization_id,
            or_(
                and_(EntityRelation.from_type == entity_type, EntityRelation.from_id == entity_id),
                and_(EntityRelation.to_type == entity_type, EntityRelation.to_id == entity_id),
            ),
        )
    )
