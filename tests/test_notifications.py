"""Notifications: channels, the outbox guarantees (staged with the alert change, retried,
given up and retried by hand, nothing lost or sent twice across receiver outages, restarts
and concurrent senders), signed webhooks to a real receiver, email over a real SMTP server,
and in-app notifications."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from fleetcore.alerts.events import stage
from fleetcore.alerts.models import Alert
from fleetcore.auth.principal import Role
from fleetcore.db import Database, utcnow
from fleetcore.notifications import egress
from fleetcore.notifications.crypto import SecretBox
from fleetcore.notifications.models import NotificationChannel, NotificationDelivery
from fleetcore.notifications.senders import send_webhook
from tests.conftest import TEST_SECRET, client_for, make_settings, running_app
from tests.support.devices import new_device
from tests.support.rules import HOT, T0, make_rule, send, wait_for_alerts
from tests.support.smtp import smtp_server
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until
from tests.support.webhook import WebhookReceiver

SECRET = "whsec-0123456789abcdef"
# Short waits so the tests run fast; the behaviour is the same as with the defaults.
FAST: dict[str, Any] = {
    "notification_poll_s": 0.05,
    "notification_retry_base_s": 0.05,
    "notification_retry_max_s": 0.4,
    "notification_max_attempts": 8,
}


@asynccontextmanager
async def notifying_app(
    database: Database, tmp_path: Path, **overrides: Any
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """The app on a live database with a fast dispatcher, and a client for it."""
    async with (
        running_app(database, tmp_path, **{**FAST, **overrides}) as app,
        client_for(app) as http,
    ):
        yield app, http


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A webhook receiver listening on a free port."""
    hook = WebhookReceiver()
    await hook.start()
    yield hook
    await hook.stop()


async def make_channel(http: httpx.AsyncClient, org: Tenant, **body: Any) -> dict[str, Any]:
    """POST /api/v1/notification-channels as an admin; the channel."""
    body.setdefault("name", f"channel {uuid.uuid4().hex[:8]}")
    response = await http.post(
        "/api/v1/notification-channels", headers=org.headers(Role.ADMIN), json=body
    )
    assert response.status_code == 201, response.text
    channel: dict[str, Any] = response.json()
    return channel


async def webhook(http: httpx.AsyncClient, org: Tenant, url: str, **body: Any) -> dict[str, Any]:
    """A webhook channel to `url` signed with SECRET."""
    return await make_channel(http, org, type="webhook", url=url, secret=SECRET, **body)


async def fire_test_event(http: httpx.AsyncClient, org: Tenant, channel: dict[str, Any]) -> str:
    """POST .../test; the id of the staged delivery."""
    response = await http.post(
        f"/api/v1/notification-channels/{channel['id']}/test", headers=org.headers(Role.ADMIN)
    )
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def deliveries(
    http: httpx.AsyncClient, org: Tenant, channel: dict[str, Any], **params: Any
) -> list[dict[str, Any]]:
    """GET .../deliveries, newest first."""
    response = await http.get(
        f"/api/v1/notification-channels/{channel['id']}/deliveries",
        headers=org.headers(Role.ADMIN),
        params=params,
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def wait_deliveries(
    http: httpx.AsyncClient,
    org: Tenant,
    channel: dict[str, Any],
    done: Callable[[list[dict[str, Any]]], bool],
    *,
    within: float = 15,
) -> list[dict[str, Any]]:
    """Wait until the channel's deliveries satisfy `done`; returns them."""
    found: list[dict[str, Any]] = []

    async def check() -> bool:
        nonlocal found
        found = await deliveries(http, org, channel)
        return done(found)

    await wait_until(check, within=within, every=0.05)
    return found


def all_delivered(count: int) -> Callable[[list[dict[str, Any]]], bool]:
    """`count` deliveries, every one delivered."""
    return lambda items: len(items) == count and all(d["status"] == "delivered" for d in items)


async def rounds_pass(app: FastAPI, count: int = 3) -> None:
    """Wait until the dispatcher finished `count` more polling rounds."""
    start = app.state.notifications.rounds
    await wait_until(lambda: app.state.notifications.rounds >= start + count, within=10)


# -- channels ----------------------------------------------------------------------------------


async def test_channels_api_validation_roles_and_secret_never_shown(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant, db: Database
) -> None:
    admin = tenant.headers(Role.ADMIN)
    channel = await webhook(client, tenant, "https://hooks.example.com/x", severities=["critical"])
    assert channel["has_secret"] is True
    assert SECRET not in str(channel)
    assert (channel["severities"], channel["rule_ids"], channel["device_ids"]) == (
        ["critical"],
        [],
        [],
    )
    shown = await client.get(f"/api/v1/notification-channels/{channel['id']}", headers=admin)
    assert shown.status_code == 200
    assert SECRET not in shown.text
    listed = await client.get("/api/v1/notification-channels", headers=admin)
    assert [c["id"] for c in listed.json()["items"]] == [channel["id"]]
    assert SECRET not in listed.text
    # Encrypted at rest with a key derived from the app's secret key.
    async with db.session() as session:
        stored = await session.get(NotificationChannel, uuid.UUID(channel["id"]))
        assert stored is not None
        assert stored.secret_encrypted is not None
        assert SECRET not in stored.secret_encrypted
        assert SecretBox(TEST_SECRET).decrypt(stored.secret_encrypted) == SECRET
    with pytest.raises(ValueError, match="decrypt"):
        SecretBox("another-secret-key-of-32-characters!!").decrypt(stored.secret_encrypted)

    async def refused(body: dict[str, Any], code: str = "VALIDATION_ERROR") -> dict[str, Any]:
        response = await client.post("/api/v1/notification-channels", headers=admin, json=body)
        assert response.status_code == 422, response.text
        error: dict[str, Any] = response.json()["error"]
        assert error["code"] == code, error
        return error

    await refused({"name": "a", "type": "webhook", "url": "ftp://x.example/", "secret": SECRET})
    await refused({"name": "a", "type": "webhook", "url": "https://x.example/"})
    await refused({"name": "a", "type": "webhook", "url": "https://x.example/", "secret": "short"})
    await refused({"name": "a", "type": "email"})
    await refused({"name": "a", "type": "email", "recipients": ["not an address"]})
    await refused(
        {"name": "a", "type": "email", "recipients": ["a@example.com"]}, "SMTP_NOT_CONFIGURED"
    )
    await refused({"name": "a", "type": "in_app", "severities": ["dire"]})
    foreign_device, _ = await new_device(client, other_tenant)
    error = await refused(
        {"name": "a", "type": "in_app", "device_ids": [foreign_device]}, "FILTER_NOT_FOUND"
    )
    assert error["details"]["field"] == "device_ids"
    taken = await client.post(
        "/api/v1/notification-channels",
        headers=admin,
        json={"name": channel["name"], "type": "in_app"},
    )
    assert (taken.status_code, taken.json()["error"]["code"]) == (409, "CHANNEL_NAME_TAKEN")

    changed = await client.patch(
        f"/api/v1/notification-channels/{channel['id']}",
        headers=admin,
        json={"url": "http://hooks.example.com/y", "severities": [], "enabled": False},
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["url"], changed.json()["severities"]) == (
        "http://hooks.example.com/y",
        [],
    )
    bad = await client.patch(
        f"/api/v1/notification-channels/{channel['id']}", headers=admin, json={"recipients": []}
    )
    assert bad.status_code == 422
    disabled = await client.post(
        f"/api/v1/notification-channels/{channel['id']}/test", headers=admin
    )
    assert (disabled.status_code, disabled.json()["error"]["code"]) == (409, "CHANNEL_DISABLED")

    for role in (Role.MANAGER, Role.VIEWER):
        denied = await client.post(
            "/api/v1/notification-channels",
            headers=tenant.headers(role),
            json={"name": "x", "type": "in_app"},
        )
        assert denied.status_code == 403
    hidden = await client.get(
        f"/api/v1/notification-channels/{channel['id']}", headers=other_tenant.headers()
    )
    assert (hidden.status_code, hidden.json()["error"]["code"]) == (404, "CHANNEL_NOT_FOUND")
    audit = await client.get(
        "/api/v1/audit", headers=admin, params={"action": "notification_channel.create"}
    )
    assert audit.status_code == 200, audit.text
    assert SECRET not in audit.text
    gone = await client.delete(f"/api/v1/notification-channels/{channel['id']}", headers=admin)
    assert gone.status_code == 204


async def test_deliveries_are_staged_in_the_alert_transaction(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    """A rolled-back alert change leaves no delivery; a committed one has its delivery."""
    channel = await make_channel(live_client, live_tenant, type="in_app")
    device_id, _ = await new_device(live_client, live_tenant)

    def new_alert() -> Alert:
        now = utcnow()
        return Alert(
            organization_id=live_tenant.org_id,
            device_id=uuid.UUID(device_id),
            name="by hand",
            severity="major",
            opened_at=now,
            last_fired_at=now,
        )

    async def staged() -> int:
        async with live_database.session() as session:
            count = await session.scalar(
                select(func.count()).where(
                    NotificationDelivery.channel_id == uuid.UUID(channel["id"])
                )
            )
        return int(count or 0)

    async with live_database.session(write=True) as session:
        alert = new_alert()
        session.add(alert)
        await stage(session, alert, "opened")
        await session.rollback()
    assert await staged() == 0
    async with live_database.session(write=True) as session:
        alert = new_alert()
        session.add(alert)
        await stage(session, alert, "opened")
        await session.commit()
    assert await staged() == 1


async def test_filters_by_severity_rule_and_device(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_a, token_a = await new_device(live_client, live_tenant)
    device_b, _ = await new_device(live_client, live_tenant)
    rule = await make_rule(
        live_client, live_tenant, device_id=device_a, condition=HOT, severity="major"
    )
    other_rule = await make_rule(live_client, live_tenant, device_id=device_b, condition=HOT)
    kinds = {
        "everything": {},
        "major": {"severities": ["major", "critical"]},
        "critical only": {"severities": ["critical"]},
        "rule": {"rule_ids": [rule["id"]]},
        "other rule": {"rule_ids": [other_rule["id"]]},
        "device a": {"device_ids": [device_a]},
        "device b": {"device_ids": [device_b]},
        "all three": {"severities": ["major"], "rule_ids": [rule["id"]], "device_ids": [device_a]},
    }
    channels = {
        name: await make_channel(live_client, live_tenant, name=name, type="in_app", **filters)
        for name, filters in kinds.items()
    }
    await send(live_client, token_a, T0, t=35)
    await wait_for_alerts(live_client, live_tenant, 1, status="active")
    await wait_deliveries(live_client, live_tenant, channels["everything"], all_delivered(1))
    counts = {
        name: len(await deliveries(live_client, live_tenant, channel))
        for name, channel in channels.items()
    }
    assert counts == {
        "everything": 1,
        "major": 1,
        "critical only": 0,
        "rule": 1,
        "other rule": 0,
        "device a": 1,
        "device b": 0,
        "all three": 1,
    }


# -- webhooks ----------------------------------------------------------------------------------


async def test_a_rule_firing_sends_signed_alert_opened_then_cleared(
    live_app: FastAPI,
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    receiver: WebhookReceiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    channel = await webhook(live_client, live_tenant, receiver.url)
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(live_client, live_tenant, device_id=device_id, condition=HOT)
    await send(live_client, token, T0, t=35)
    await wait_until(lambda: len(receiver.delivered) == 1)
    opened = receiver.delivered[0]
    assert opened.signed_with(SECRET)
    assert not opened.signed_with("another secret of some length")
    assert opened.headers["x-fleetcore-event"] == "alert.opened"
    assert opened.headers["content-type"] == "application/json"
    assert opened.json["event"] == "alert.opened"
    assert opened.json["id"] == opened.delivery_id
    assert opened.json["alert"]["device_id"] == device_id
    assert opened.json["alert"]["status"] == "active"
    await send(live_client, token, T0 + 1000, t=20)
    await wait_until(lambda: len(receiver.delivered) == 2)
    cleared = receiver.delivered[1]
    assert cleared.signed_with(SECRET)
    assert cleared.json["event"] == "alert.cleared"
    assert cleared.json["alert"]["id"] == opened.json["alert"]["id"]
    assert cleared.delivery_id != opened.delivery_id
    done = await wait_deliveries(live_client, live_tenant, channel, all_delivered(2))
    assert [d["event"] for d in done] == ["alert.cleared", "alert.opened"]
    assert all(d["attempts"] == 1 for d in done)
    logged = capsys.readouterr()
    assert SECRET not in logged.out + logged.err


async def test_retries_with_backoff_then_delivers_exactly_once(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    base = 0.2
    receiver.script = [500, 503, 429]
    async with notifying_app(
        live_database, tmp_path, notification_retry_base_s=base, notification_retry_max_s=10
    ) as (_, http):
        org = await make_tenant(http, live_database)
        channel = await webhook(http, org, receiver.url)
        delivery_id = await fire_test_event(http, org, channel)
        [done] = await wait_deliveries(http, org, channel, all_delivered(1))
    assert done["attempts"] == 4
    assert done["last_error"] is None
    assert [r.status for r in receiver.received] == [500, 503, 429, 200]
    assert {r.delivery_id for r in receiver.received} == {delivery_id}
    assert len({r.body for r in receiver.received}) == 1  # the same signed body each time
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    for attempt, gap in enumerate(gaps, start=1):  # at least half of base * 2^(n-1)
        assert gap >= base * 2 ** (attempt - 1) / 2 * 0.95, gaps


async def test_receiver_down_then_up_loses_nothing(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await receiver.stop()
    async with notifying_app(live_database, tmp_path) as (_, http):
        org = await make_tenant(http, live_database)
        channel = await webhook(http, org, receiver.url)
        ids = {await fire_test_event(http, org, channel) for _ in range(3)}
        await wait_deliveries(
            http,
            org,
            channel,
            lambda items: (
                len(items) == 3
                and all(d["attempts"] >= 2 and d["status"] != "delivered" for d in items)
            ),
        )
        failing = await deliveries(http, org, channel)
        assert all(d["last_error"] for d in failing)
        await receiver.start()
        await wait_deliveries(http, org, channel, all_delivered(3))
    assert sorted(r.delivery_id for r in receiver.received) == sorted(ids)


async def test_given_up_after_n_attempts_then_retried_by_hand(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    receiver.status = 500
    async with notifying_app(live_database, tmp_path, notification_max_attempts=3) as (app, http):
        org = await make_tenant(http, live_database)
        admin = org.headers(Role.ADMIN)
        channel = await webhook(http, org, receiver.url)
        delivery_id = await fire_test_event(http, org, channel)
        [failed] = await wait_deliveries(
            http, org, channel, lambda items: items[0]["status"] == "failed"
        )
        assert (failed["attempts"], failed["last_error"]) == (3, "HTTP 500")
        await rounds_pass(app)
        assert len(receiver.received) == 3  # given up: no fourth attempt
        listed = await deliveries(http, org, channel, status="failed")
        assert [d["id"] for d in listed] == [delivery_id]

        receiver.status = 200
        retried = await http.post(
            f"/api/v1/notification-deliveries/{delivery_id}/retry", headers=admin
        )
        assert retried.status_code == 200, retried.text
        assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
        [done] = await wait_deliveries(http, org, channel, all_delivered(1))
        assert done["attempts"] == 1
        again = await http.post(
            f"/api/v1/notification-deliveries/{delivery_id}/retry", headers=admin
        )
        assert (again.status_code, again.json()["error"]["code"]) == (409, "DELIVERY_NOT_FAILED")
        await rounds_pass(app)
        assert len(receiver.delivered) == 1

        # A 4xx answer (other than 408/429) is final at once.
        receiver.status = 410
        gone_id = await fire_test_event(http, org, channel)
        await wait_deliveries(
            http,
            org,
            channel,
            lambda items: items[0]["id"] == gone_id and items[0]["status"] == "failed",
        )
        [gone] = await deliveries(http, org, channel, status="failed")
        assert (gone["attempts"], gone["last_error"]) == (1, "HTTP 410")
        other = await make_tenant(http, live_database)
        hidden = await http.post(
            f"/api/v1/notification-deliveries/{gone_id}/retry", headers=other.headers()
        )
        assert hidden.status_code == 404


async def test_a_restart_delivers_what_was_pending_once_and_never_resends(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    await receiver.stop()
    async with notifying_app(live_database, tmp_path) as (_, http):
        org = await make_tenant(http, live_database)
        channel = await webhook(http, org, receiver.url)
        ids = {await fire_test_event(http, org, channel) for _ in range(3)}
        await wait_deliveries(
            http, org, channel, lambda items: all(d["attempts"] >= 1 for d in items)
        )
    # Stopped with three undelivered; one looks as if its sender died after sending.
    crashed = sorted(ids)[0]
    async with live_database.session(write=True) as session:
        await session.execute(
            update(NotificationDelivery)
            .where(NotificationDelivery.id == uuid.UUID(crashed))
            .values(
                status="delivering",
                lease_until=utcnow() - timedelta(seconds=1),
                lease_token=uuid.uuid4(),
            )
        )
        await session.commit()
    await receiver.start()
    async with notifying_app(live_database, tmp_path) as (_, http):
        await wait_deliveries(http, org, channel, all_delivered(3))
    assert sorted(r.delivery_id for r in receiver.delivered) == sorted(ids)
    async with notifying_app(live_database, tmp_path) as (app, http):
        await rounds_pass(app, 5)
        await fire_test_event(http, org, channel)  # the outbox still works
        await wait_deliveries(http, org, channel, all_delivered(4))
        await rounds_pass(app, 3)
    assert len(receiver.received) == 4  # the three delivered ones were not sent again
    assert len({r.delivery_id for r in receiver.received}) == 4


async def test_two_dispatchers_never_send_a_delivery_twice(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    async with (
        notifying_app(live_database, tmp_path) as (first, http),
        notifying_app(live_database, tmp_path) as (second, _),
    ):
        org = await make_tenant(http, live_database)
        channel = await webhook(http, org, receiver.url)
        ids = [await fire_test_event(http, org, channel) for _ in range(20)]
        second.state.notifications.wake()
        await wait_deliveries(http, org, channel, all_delivered(20))
        await rounds_pass(first)
        await rounds_pass(second)
    assert sorted(r.delivery_id for r in receiver.received) == sorted(ids)


# -- email and in-app --------------------------------------------------------------------------


async def test_email_over_smtp(live_database: Database, tmp_path: Path) -> None:
    with smtp_server() as mailbox:
        async with notifying_app(
            live_database,
            tmp_path,
            smtp_host="127.0.0.1",
            smtp_port=mailbox.port,
            smtp_starttls=False,
            smtp_from="alerts@fleet.example",
        ) as (_, http):
            org = await make_tenant(http, live_database)
            channel = await make_channel(
                http, org, type="email", recipients=["ops@example.com", "oncall@example.com"]
            )
            assert channel["recipients"] == ["ops@example.com", "oncall@example.com"]
            device_id, token = await new_device(http, org)
            await make_rule(
                http, org, name="too hot", device_id=device_id, condition=HOT, severity="major"
            )
            await send(http, token, T0, t=35)
            [done] = await wait_deliveries(http, org, channel, all_delivered(1))
            await wait_until(lambda: len(mailbox.mails) == 1)
    recipients, message = mailbox.mails[0]
    assert sorted(recipients) == ["oncall@example.com", "ops@example.com"]
    assert message["From"] == "alerts@fleet.example"
    assert message["Subject"] == "[Fleetcore] major alert opened: too hot"
    assert message["Message-ID"] == f"<{done['id']}@fleetcore>"
    assert message["X-Fleetcore-Event"] == "alert.opened"
    assert device_id in str(message.get_payload())


async def test_in_app_notifications_are_listed_and_read_by_the_organization(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    channel = await make_channel(live_client, live_tenant, type="in_app")
    device_id, token = await new_device(live_client, live_tenant)
    await make_rule(
        live_client, live_tenant, name="hot", device_id=device_id, condition=HOT, severity="major"
    )
    await send(live_client, token, T0, t=35)
    await wait_deliveries(live_client, live_tenant, channel, all_delivered(1))
    viewer = live_tenant.headers(Role.VIEWER)
    listed = await live_client.get("/api/v1/notifications", headers=viewer)
    [item] = listed.json()["items"]
    assert (item["event"], item["title"], item["read_at"]) == (
        "alert.opened",
        "major alert opened: hot",
        None,
    )
    assert item["payload"]["alert"]["device_id"] == device_id
    other = await make_tenant(live_client, live_database)
    hidden = await live_client.post(
        f"/api/v1/notifications/{item['id']}/read", headers=other.headers(Role.VIEWER)
    )
    assert hidden.status_code == 404
    empty = await live_client.get("/api/v1/notifications", headers=other.headers(Role.VIEWER))
    assert empty.json()["items"] == []
    read = await live_client.post(f"/api/v1/notifications/{item['id']}/read", headers=viewer)
    assert read.status_code == 200, read.text
    assert read.json()["read_at"] is not None
    unread = await live_client.get(
        "/api/v1/notifications", headers=viewer, params={"unread": "true"}
    )
    assert unread.json()["items"] == []


# -- where webhooks may go ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.0.10", False),
        ("169.254.169.254", False),  # cloud metadata
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),  # noqa: S104 (an address to judge, not to bind)
        ("224.0.0.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),  # IPv4-mapped loopback
        ("::ffff:10.0.0.1", False),
        ("ff0e::1", False),  # global-scope multicast
        ("93.184.215.14", True),
        ("::ffff:93.184.215.14", True),
        ("2606:4700:4700::1111", True),
        # IPv6 that Python 3.11 calls global: judged by the IPv4 address it carries ...
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", False),  # NAT64 of 169.254.169.254
        ("64:ff9b::5db8:d70e", True),  # NAT64 of 93.184.215.14
        ("2002:7f00:1::1", False),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", False),  # 6to4 of 10.0.0.1
        ("2002:5db8:d70e::1", True),  # 6to4 of 93.184.215.14
        ("2001:0:4136:e378:8000:63bf:f5ff:fffe", False),  # Teredo, client 10.0.0.1
        ("2001:0:a00:1:8000:63bf:a247:28f1", False),  # Teredo, server 10.0.0.1
        ("2001:0:4136:e378:8000:63bf:a247:28f1", True),  # Teredo, both public
        # ... or refused as a whole.
        ("64:ff9b:1::a00:1", False),  # local-use NAT64
        ("fec0::1", False),  # site-local (deprecated)
        ("::127.0.0.1", False),  # IPv4-compatible (deprecated)
        ("::93.184.215.14", False),
        ("3fff::1", False),  # documentation
    ],
)
def test_only_global_unicast_addresses_are_public(address: str, public: bool) -> None:
    assert egress.is_public(address) is public


def test_private_networks_are_refused_by_default_only_in_production(tmp_path: Path) -> None:
    assert egress.private_allowed(make_settings(tmp_path))
    assert not egress.private_allowed(make_settings(tmp_path, environment="production"))
    assert egress.private_allowed(
        make_settings(tmp_path, environment="production", webhook_allow_private_networks=True)
    )


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "169.254.169.254"])
async def test_a_webhook_to_a_private_address_is_refused_when_saved(
    live_database: Database, tmp_path: Path, host: str
) -> None:
    async with notifying_app(live_database, tmp_path, webhook_allow_private_networks=False) as (
        _,
        http,
    ):
        org = await make_tenant(http, live_database)
        admin = org.headers(Role.ADMIN)
        body = {"name": "inside", "type": "webhook", "url": f"http://{host}:8080/x"}
        refused = await http.post(
            "/api/v1/notification-channels", headers=admin, json={**body, "secret": SECRET}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "WEBHOOK_URL_FORBIDDEN"
        assert refused.json()["error"]["details"]["field"] == "url"
        listed = await http.get("/api/v1/notification-channels", headers=admin)
        assert listed.json()["items"] == []
        # A public address is accepted; changing it to a private one is refused.
        public = {**body, "secret": SECRET, "url": "http://93.184.215.14/hook"}
        created = await http.post("/api/v1/notification-channels", headers=admin, json=public)
        assert created.status_code == 201, created.text
        moved = await http.patch(
            f"/api/v1/notification-channels/{created.json()['id']}",
            headers=admin,
            json={"url": body["url"]},
        )
        assert moved.status_code == 422
        assert moved.json()["error"]["code"] == "WEBHOOK_URL_FORBIDDEN"
        again = await http.get(
            f"/api/v1/notification-channels/{created.json()['id']}", headers=admin
        )
        assert again.json()["url"] == "http://93.184.215.14/hook"


async def test_the_connection_itself_refuses_a_private_address(
    receiver: WebhookReceiver, tmp_path: Path
) -> None:
    """A name may resolve to a public address when saved and a private one later (DNS
    rebinding): the webhook client checks what it connects to, every time."""
    body = b'{"event": "alert.opened"}'
    headers = {"Content-Type": "application/json"}
    for host in ("127.0.0.1", "localhost"):
        url = receiver.url.replace("127.0.0.1", host)
        async with egress.webhook_client(
            make_settings(tmp_path, webhook_allow_private_networks=False)
        ) as guarded:
            outcome = await send_webhook(guarded, url, body=body, headers=headers, deadline_s=10)
        assert not outcome.delivered
        assert outcome.final  # retrying will not make the address public
        assert outcome.error is not None
        assert "not a public address" in outcome.error
    assert receiver.received == []
    # The same request with private networks allowed reaches the receiver (the check above
    # is what refused it, not a receiver that was not there).
    async with egress.webhook_client(make_settings(tmp_path)) as allowed:
        outcome = await send_webhook(
            allowed, receiver.url, body=body, headers=headers, deadline_s=10
        )
    assert outcome.delivered
    assert [r.body for r in receiver.received] == [body]
