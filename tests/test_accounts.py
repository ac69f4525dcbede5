"""Accounts: sign-up with email verification, invitations and password reset, through the
API, with a real SMTP server (aiosmtpd) whose mails' links the tests follow."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from structlog.testing import capture_logs

from fleetcore.accounts.models import AccountLink
from fleetcore.audit.models import AuditEvent
from fleetcore.auth.models import User
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from tests.conftest import client_for, running_app
from tests.support.account_mail import mails, token_of, wait_mail
from tests.support.smtp import Mailbox, smtp_server
from tests.support.tenants import PASSWORD, Tenant, login, make_tenant

NEW_PASSWORD = "a brand new passphrase"


@asynccontextmanager
async def accounts_app(
    db: Database, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[httpx.AsyncClient, Mailbox]]:
    """The app sending its mails to a real SMTP server, sign-up open unless overridden."""
    with smtp_server() as mailbox:
        settings: dict[str, Any] = {
            "signup": "open",
            "smtp_host": "127.0.0.1",
            "smtp_port": mailbox.port,
            "smtp_starttls": False,
            **overrides,
        }
        async with running_app(db, tmp_path, **settings) as app, client_for(app) as http:
            yield http, mailbox


@pytest.fixture
async def site(db: Database, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Mailbox]]:
    async with accounts_app(db, tmp_path) as pair:
        yield pair


async def register(http: httpx.AsyncClient, email: str, name: str = "Acme Cold") -> httpx.Response:
    return await http.post(
        "/api/v1/auth/register",
        json={"organization_name": name, "email": email, "password": PASSWORD},
    )


async def expire_links(db: Database, email: str) -> None:
    async with db.session(write=True) as session:
        await session.execute(
            update(AccountLink)
            .where(AccountLink.email == email)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        await session.commit()


async def audit_actions(db: Database, prefix: str) -> list[tuple[str, str]]:
    async with db.session() as session:
        rows = await session.execute(
            select(AuditEvent.action, AuditEvent.outcome)
            .where(AuditEvent.action.like(f"{prefix}%"))
            .order_by(AuditEvent.id)
        )
        return [(a, o) for a, o in rows]


# -- sign-up --------------------------------------------------------------------------------
async def test_signup_is_closed_by_default(db: Database, tmp_path: Path) -> None:
    async with running_app(db, tmp_path) as app, client_for(app) as http:
        answer = await register(http, "someone@example.com")
        assert answer.status_code == 403
        assert answer.json()["error"]["code"] == "SIGNUP_CLOSED"
        page = await http.get("/auth/register")
        assert page.status_code == 403
        assert "Sign-up is closed" in page.text
        assert "<form" not in page.text


async def test_signup_verify_then_sign_in(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    email = "Founder@Acme.example.com"
    answer = await register(http, email)
    assert answer.status_code == 202, answer.text
    # Not an account yet: nothing can sign in before the address is verified.
    refused = await http.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert refused.status_code == 401
    mail = await wait_mail(mailbox, email.lower(), "signup")
    token = token_of(mail)
    verified = await http.post("/api/v1/auth/verify", json={"token": token})
    assert verified.status_code == 200, verified.text
    tokens = await login(http, email.lower())
    me = await http.get(
        "/api/v1/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.json()["role"] == "admin"
    assert me.json()["organization"]["name"] == "Acme Cold"
    assert me.json()["organization"]["slug"].startswith("acme-cold-")
    # Single use: the same link again is refused, and so is a forged one.
    again = await http.post("/api/v1/auth/verify", json={"token": token})
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "INVALID_LINK"
    raw, _, signature = token.partition(".")
    forged = await http.post("/api/v1/auth/verify", json={"token": f"{raw[:-2]}xx.{signature}"})
    assert forged.status_code == 422
    assert forged.json()["error"]["code"] == "INVALID_LINK"
    # The store keeps only the hash of the token's random part.
    async with db.session() as session:
        stored = await session.scalar(select(AccountLink).where(AccountLink.email == email.lower()))
    assert stored is not None
    assert raw not in stored.token_hash
    assert "password_hash" not in stored.payload
    assert ("account.signup", "success") in await audit_actions(db, "account.signup")
    assert ("account.signup", "failure") in await audit_actions(db, "account.signup")


async def test_an_expired_signup_link_is_refused(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    assert (await register(http, "late@example.com")).status_code == 202
    token = token_of(await wait_mail(mailbox, "late@example.com", "signup"))
    await expire_links(db, "late@example.com")
    answer = await http.post("/api/v1/auth/verify", json={"token": token})
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "INVALID_LINK"
    async with db.session() as session:
        users = await session.scalar(select(func.count()).where(User.email == "late@example.com"))
    assert users == 0


async def test_no_enumeration_at_signup_and_reset(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    tenant = await make_tenant(http, db)
    taken, free = tenant.emails[Role.VIEWER], "nobody-yet@example.com"
    a, b = await register(http, taken), await register(http, free)
    assert (a.status_code, a.json()) == (b.status_code, b.json())
    # The owner of the taken address hears of it by mail, with no link that creates anything.
    notice = await wait_mail(mailbox, taken, "signup_taken")
    assert "already has an account" in notice.get_payload()  # type: ignore[operator]
    await wait_mail(mailbox, free, "signup")
    assert mails(mailbox, taken, "signup") == []
    r1 = await http.post("/api/v1/auth/password-reset", json={"email": taken})
    r2 = await http.post("/api/v1/auth/password-reset", json={"email": "ghost@example.com"})
    assert (r1.status_code, r1.json()) == (r2.status_code, r2.json()) == (202, r1.json())
    await wait_mail(mailbox, taken, "reset")
    # Invitation acceptance with a bad link answers alike whatever the address.
    bad = await http.post(
        "/api/v1/invitations/accept",
        json={"token": "x" * 43 + "." + "0" * 32, "password": PASSWORD},
    )
    assert bad.status_code == 422


# -- invitations ----------------------------------------------------------------------------
async def invite(
    http: httpx.AsyncClient, tenant: Tenant, email: str, role: str = "operator"
) -> httpx.Response:
    return await http.post(
        "/api/v1/invitations",
        headers=tenant.headers(Role.ADMIN),
        json={"email": email, "role": role},
    )


async def test_invitation_accepted_signs_in_to_the_inviting_organization(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    tenant, other = await make_tenant(http, db), await make_tenant(http, db)
    created = await invite(http, tenant, "colleague@example.com")
    assert created.status_code == 201, created.text
    invitation = created.json()
    assert invitation["status"] == "pending"
    assert "token" not in invitation
    # Another organization neither sees nor revokes it.
    assert (
        await http.delete(
            f"/api/v1/invitations/{invitation['id']}", headers=other.headers(Role.ADMIN)
        )
    ).status_code == 404
    listed = await http.get("/api/v1/invitations", headers=other.headers(Role.ADMIN))
    assert invitation["id"] not in listed.text
    # Only admins invite.
    assert (
        await http.post(
            "/api/v1/invitations",
            headers=tenant.headers(Role.MANAGER),
            json={"email": "x@example.com"},
        )
    ).status_code == 403
    token = token_of(await wait_mail(mailbox, "colleague@example.com", "invite"))
    accepted = await http.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert accepted.status_code == 200, accepted.text
    me = await http.get(
        "/api/v1/auth/me",
        headers={"Authorization": f"Bearer {accepted.json()['access_token']}"},
    )
    assert me.json()["organization"]["id"] == str(tenant.org_id)
    assert me.json()["role"] == "operator"
    again = await http.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert again.status_code == 422
    listed = await http.get("/api/v1/invitations", headers=tenant.headers(Role.ADMIN))
    assert [i["status"] for i in listed.json()] == ["accepted"]
    assert ("invitation.accept", "success") in await audit_actions(db, "invitation.")


async def test_revoked_and_expired_invitations_are_refused(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    tenant = await make_tenant(http, db)
    revoked = (await invite(http, tenant, "revoked@example.com")).json()
    token = token_of(await wait_mail(mailbox, "revoked@example.com", "invite"))
    gone = await http.delete(
        f"/api/v1/invitations/{revoked['id']}", headers=tenant.headers(Role.ADMIN)
    )
    assert gone.json()["status"] == "revoked"
    answer = await http.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert answer.status_code == 422
    assert answer.json()["error"]["code"] == "INVALID_LINK"
    await invite(http, tenant, "expired@example.com")
    token = token_of(await wait_mail(mailbox, "expired@example.com", "invite"))
    await expire_links(db, "expired@example.com")
    answer = await http.post(
        "/api/v1/invitations/accept", json={"token": token, "password": PASSWORD}
    )
    assert answer.status_code == 422
    # A reset token is no invitation: the signature binds a token to its purpose.
    await http.post("/api/v1/auth/password-reset", json={"email": tenant.emails[Role.VIEWER]})
    reset = token_of(await wait_mail(mailbox, tenant.emails[Role.VIEWER], "reset"))
    answer = await http.post(
        "/api/v1/invitations/accept", json={"token": reset, "password": PASSWORD}
    )
    assert answer.status_code == 422


async def test_inviting_an_address_with_an_account_answers_alike_and_mails_its_owner(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    tenant, other = await make_tenant(http, db), await make_tenant(http, db)
    elsewhere = other.emails[Role.VIEWER]
    a, b = await invite(http, tenant, elsewhere), await invite(http, tenant, "fresh@example.com")
    assert a.status_code == b.status_code == 201
    assert set(a.json()) == set(b.json())
    assert a.json()["status"] == b.json()["status"]
    token = token_of(await wait_mail(mailbox, elsewhere, "invite"))
    answer = await http.post(
        "/api/v1/invitations/accept", json={"token": token, "password": NEW_PASSWORD}
    )
    assert answer.status_code == 202
    await wait_mail(mailbox, elsewhere, "invite_taken")
    # The account stays as it was: its organization and password.
    await login(http, elsewhere, PASSWORD)
    async with db.session() as session:
        user = await session.scalar(select(User).where(User.email == elsewhere))
    assert user is not None
    assert user.organization_id == other.org_id


# -- password reset -------------------------------------------------------------------------
async def test_password_reset_ends_every_session(
    site: tuple[httpx.AsyncClient, Mailbox], db: Database
) -> None:
    http, mailbox = site
    tenant = await make_tenant(http, db)
    email = tenant.emails[Role.VIEWER]
    session_tokens = await login(http, email)
    asked = await http.post("/api/v1/auth/password-reset", json={"email": email})
    assert asked.status_code == 202
    token = token_of(await wait_mail(mailbox, email, "reset"))
    done = await http.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": NEW_PASSWORD}
    )
    assert done.status_code == 204, done.text
    old = {"Authorization": f"Bearer {session_tokens['access_token']}"}
    assert (await http.get("/api/v1/auth/me", headers=old)).status_code == 401
    assert (
        await http.get("/api/v1/auth/me", headers=tenant.headers(Role.VIEWER))
    ).status_code == 401
    refresh = await http.post(
        "/api/v1/auth/refresh", json={"refresh_token": session_tokens["refresh_token"]}
    )
    assert refresh.status_code == 401
    await login(http, email, NEW_PASSWORD)
    old_password = await http.post(
        "/api/v1/auth/login", json={"email": email, "password": PASSWORD}
    )
    assert old_password.status_code == 401
    again = await http.post(
        "/api/v1/auth/password-reset/confirm", json={"token": token, "password": PASSWORD}
    )
    assert again.status_code == 422
    assert ("account.password_reset", "success") in await audit_actions(db, "account.password")


# -- rate limits ----------------------------------------------------------------------------
async def test_rate_limits_answer_429_with_retry_after(db: Database, tmp_path: Path) -> None:
    async with accounts_app(
        db, tmp_path, account_mails_per_email=2, account_requests_per_address=5
    ) as (http, _):
        for _ in range(2):
            ok = await http.post("/api/v1/auth/password-reset", json={"email": "a@example.com"})
            assert ok.status_code == 202
        limited = await http.post("/api/v1/auth/password-reset", json={"email": "a@example.com"})
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "ACCOUNT_RATE_LIMITED"
        assert int(limited.headers["Retry-After"]) > 0
        # Per address too: other addresses and other routes share the client's window.
        answers = [
            (await http.post("/api/v1/auth/verify", json={"token": "y" * 20})).status_code
            for _ in range(3)
        ]
        assert answers[-1] == 429, answers


# -- development: the link in the log ---------------------------------------------------------
@pytest.mark.parametrize("environment", ["development", "test"])
async def test_links_are_logged_only_in_development_without_smtp(
    db: Database, tmp_path: Path, environment: str
) -> None:
    with capture_logs() as logs:
        async with (
            running_app(db, tmp_path, signup="open", environment=environment) as app,
            client_for(app) as http,
        ):
            assert (await register(http, f"dev-{environment}@example.com")).status_code == 202
    logged = [e for e in logs if e["event"].startswith("account_mail")]
    assert len(logged) == 1, logged
    if environment == "development":
        assert logged[0]["event"] == "account_mail_link"
        assert "/auth/verify?token=" in logged[0]["link"]
    else:
        assert logged[0]["event"] == "account_mail_not_sent"
        assert "token=" not in str(logs)
