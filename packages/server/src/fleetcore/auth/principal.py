"""Who is calling: the principal every service function takes, and role checks."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum

from fleetcore.errors import Forbidden


class Role(StrEnum):
    """Organization roles, each including the rights of those below it."""

    ADMIN = "admin"  # users, API keys, audit, and everything below
    MANAGER = "manager"  # devices, profiles, assets, rules
    OPERATOR = "operator"  # sends commands, acknowledges alerts
    VIEWER = "viewer"  # reads
    # Outside the ranks: a route driver reaches only the vending routes assigned to them
    # (their service orders and machines) and reads the product catalogue; every other API
    # route refuses the role (auth.deps.require_principal) and every other page sends the
    # driver to their routes.
    DRIVER = "driver"

    @property
    def rank(self) -> int:
        """Higher includes lower."""
        return _RANK[self]


_RANK = {Role.DRIVER: -1, Role.VIEWER: 0, Role.OPERATOR: 1, Role.MANAGER: 2, Role.ADMIN: 3}


class PermissionDenied(Forbidden):
    """The caller's role is too low; recorded in the audit log by the error handler."""

    def __init__(self, message: str, *, required: str) -> None:
        super().__init__(message, code="PERMISSION_DENIED", details={"required_role": required})
        self.required = required


class PrincipalKind(StrEnum):
    """How the caller authenticated."""

    USER = "user"
    API_KEY = "api_key"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: a user (token or cookie) or an API key."""

    kind: PrincipalKind
    subject_id: uuid.UUID  # the user's or the API key's id
    organization_id: uuid.UUID | None
    role: Role
    is_superuser: bool = False
    session_id: uuid.UUID | None = None  # the refresh-token family of a user session
    via_cookie: bool = False

    @property
    def user_id(self) -> uuid.UUID | None:
        """The user behind the call, if a user."""
        return self.subject_id if self.kind is PrincipalKind.USER else None

    @property
    def is_driver(self) -> bool:
        """True for a route driver, whose reach the vending module scopes."""
        return self.role is Role.DRIVER and not self.is_superuser

    @property
    def org_id(self) -> uuid.UUID:
        """The organization the call acts in; a superuser without one may not act in one."""
        if self.organization_id is None:
            raise Forbidden("this account belongs to no organization", code="NO_ORGANIZATION")
        return self.organization_id

    def has(self, role: Role) -> bool:
        """True if the principal's role includes `role`."""
        return self.is_superuser or self.role.rank >= role.rank

    def require(self, role: Role) -> None:
        """Raise PermissionDenied unless the principal's role includes `role`."""
        if not self.has(role):
            raise PermissionDenied(
                f"this action needs the {role.value} role (you are {self.role.value})",
                required=role.value,
            )

    def require_superuser(self) -> None:
        """Raise PermissionDenied unless a platform superuser."""
        if not self.is_superuser:
            raise PermissionDenied("this action needs a platform superuser", required="superuser")
