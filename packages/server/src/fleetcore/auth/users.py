"""Organizations and users: who may create and change whom."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.audit import service as audit
from fleetcore.auth.models import Organization, RefreshToken, User
from fleetcore.auth.principal import Principal, Role
from fleetcore.auth.schemas import OrganizationIn, UserIn, UserPatch
from fleetcore.auth.security import hash_password
from fleetcore.db import utcnow
from fleetcore.errors import Conflict, Forbidden, NotFound
from fleetcore.pagination import paginate
from fleetcore.plans import service as plans
from fleetcore.plans.limits import Limit


async def create_organization(
    session: AsyncSession, principal: Principal | None, *, data: OrganizationIn
) -> Organization:
    """A new tenant (superusers only; `principal=None` is the CLI)."""
    if principal is not None:
        principal.require_superuser()
    if await session.scalar(select(Organization.id).where(Organization.slug == data.slug)):
        raise Conflict(f"slug {data.slug!r} is taken", code="SLUG_TAKEN", details={"field": "slug"})
    org = Organization(name=data.name, slug=data.slug)
    session.add(org)
    await session.flush()
    audit.record(
        session,
        action="organization.create",
        actor=principal,
        organization_id=org.id,
        target_type="organization",
        target_id=org.id,
        details={"slug": org.slug},
        actor_type=None if principal else "system",
    )
    await session.commit()
    return org


async def list_organizations(session: AsyncSession, principal: Principal) -> list[Organization]:
    """Every organization for a superuser; one's own otherwise."""
    query = select(Organization).order_by(Organization.slug)
    if not principal.is_superuser:
        query = query.where(Organization.id == principal.org_id)
    return list((await session.scalars(query)).all())


async def get_organization_by_slug(session: AsyncSession, slug: str) -> Organization | None:
    """An organization by slug (for the CLI and the demo)."""
    return await session.scalar(select(Organization).where(Organization.slug == slug))


async def create_user(
    session: AsyncSession,
    principal: Principal | None,
    *,
    data: UserIn,
    is_superuser: bool = False,
) -> User:
    """A user in the caller's organization (any, for a superuser; `None` is the CLI)."""
    if principal is None:
        organization_id = data.organization_id
    else:
        principal.require(Role.ADMIN)
        if data.organization_id is not None and data.organization_id != principal.organization_id:
            principal.require_superuser()
            organization_id = data.organization_id
        else:
            organization_id = principal.org_id
        if is_superuser:
            principal.require_superuser()
    if organization_id is not None and await session.get(Organization, organization_id) is None:
        raise NotFound("organization not found", code="ORGANIZATION_NOT_FOUND")
    if organization_id is not None:
        await plans.admit(session, organization_id, Limit.USERS)  # 403 PLAN_LIMIT when over
    email = data.email.lower()
    if await session.scalar(select(User.id).where(func.lower(User.email) == email)):
        raise Conflict(
            "a user with this email exists", code="EMAIL_TAKEN", details={"field": "email"}
        )
    user = User(
        organization_id=organization_id,
        email=email,
        password_hash=await hash_password(data.password),
        role=data.role.value,
        is_superuser=is_superuser,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict("a user with this email exists", code="EMAIL_TAKEN") from None
    audit.record(
        session,
        action="user.create",
        actor=principal,
        organization_id=organization_id,
        target_type="user",
        target_id=user.id,
        details={"email": email, "role": user.role, "superuser": is_superuser},
        actor_type=None if principal else "system",
    )
    await session.commit()
    return user


async def _get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    user = await session.get(User, user_id)
    if user is None or (not principal.is_superuser and user.organization_id != principal.org_id):
        raise NotFound("user not found", code="USER_NOT_FOUND")
    return user


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    """One user of the caller's organization (admins, or the user themself)."""
    if principal.user_id != user_id:
        principal.require(Role.ADMIN)
    return await _get_user(session, principal, user_id)


async def list_users(
    session: AsyncSession, principal: Principal, *, cursor: str | None, limit: int
) -> list[User]:
    """Users of the caller's organization, by email (admins)."""
    principal.require(Role.ADMIN)
    query = select(User).where(User.organization_id == principal.org_id)
    query = paginate(query, sort=User.email, id_column=User.id, cursor=cursor, limit=limit)
    return list((await session.scalars(query)).all())


async def update_user(
    session: AsyncSession, principal: Principal, user_id: uuid.UUID, *, data: UserPatch
) -> User:
    """Change a user's role or deactivate them (admins; not themselves)."""
    principal.require(Role.ADMIN)
    user = await _get_user(session, principal, user_id)
    if user.id == principal.user_id and (data.role is not None or data.is_active is False):
        raise Forbidden(
            "you cannot change your own role or deactivate yourself", code="SELF_CHANGE"
        )
    changes: dict[str, object] = {}
    if data.role is not None and data.role.value != user.role:
        changes["role"] = [user.role, data.role.value]
        user.role = data.role.value
    if data.is_active is not None and data.is_active != user.is_active:
        if data.is_active and user.organization_id is not None:  # back: counts again
            await plans.admit(session, user.organization_id, Limit.USERS)
        changes["is_active"] = [user.is_active, data.is_active]
        user.is_active = data.is_active
        if not data.is_active:  # end every session of a deactivated user now
            await session.execute(
                update(RefreshToken)
                .where(RefreshToken.user_id == user.id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
    if changes:
        audit.record(
            session,
            action="user.update",
            actor=principal,
            organization_id=user.organization_id,
            target_type="user",
            target_id=user.id,
            details=changes,
        )
    await session.commit()
    return user
