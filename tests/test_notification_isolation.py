"""One tenant's slow webhook cannot stall the others' notifications: each send has a total
deadline and a cap on the answer read, and deliveries go out on their own within slots per
organization and channel (issue 14, finding 4). Real sockets on both ends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetcore.db import Database
from tests.support.slow_http import HUGE_BYTES, Mode, SlowReceiver
from tests.support.tenants import make_tenant
from tests.support.wait import wait_until
from tests.support.webhook import WebhookReceiver
from tests.test_notifications import (
    all_delivered,
    deliveries,
    fire_test_event,
    notifying_app,
    wait_deliveries,
    webhook,
)


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """A well-behaved webhook receiver."""
    hook = WebhookReceiver()
    await hook.start()
    yield hook
    await hook.stop()


async def slow(mode: Mode) -> SlowReceiver:
    started = SlowReceiver(mode)
    await started.start()
    return started


async def test_a_hanging_receiver_holds_its_tenants_slots_not_the_dispatcher(
    live_database: Database, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """Tenant A's receiver trickles its answer forever (no per-read timeout ever trips); A
    has six deliveries to it on two channels. Tenant B's delivery arrives while A's still hang,
    and A holds no more than its organization's slots."""
    hanging = await slow("trickle")
    settings = {
        "notification_timeout_s": 60,  # the deadline does not end A's sends during the test
        "notification_lease_s": 180,
        "notification_concurrency": 4,
        "notification_concurrency_per_org": 2,
        "notification_concurrency_per_channel": 2,
    }
    async with notifying_app(live_database, tmp_path, **settings) as (_, http):
        # The receiver stops first, whatever happens: the app's stop waits for A's sends.
        try:
            a = await make_tenant(http, live_database)
            channels = [await webhook(http, a, hanging.url, name=name) for name in ("a1", "a2")]
            for channel in channels * 3:
                await fire_test_event(http, a, channel)
            await wait_until(lambda: hanging.hanging >= 2, within=15)

            b = await make_tenant(http, live_database)
            fast = await webhook(http, b, receiver.url)
            delivery_id = await fire_test_event(http, b, fast)
            await wait_deliveries(http, b, fast, all_delivered(1), within=15)
            assert [r.delivery_id for r in receiver.delivered] == [delivery_id]
            assert hanging.hanging == 2  # A's sends still hang, two of them: A's slots
            assert hanging.requests == 2
            a_items = [d for c in channels for d in await deliveries(http, a, c)]
            assert sorted(d["status"] for d in a_items) == ["delivering"] * 2 + ["pending"] * 4
        finally:
            await hanging.stop()


async def test_a_send_past_its_deadline_fails_and_is_retried(
    live_database: Database, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The receiver trickles a byte every 50 ms: every read is quick, the answer never
    ends. The send stops at its deadline, says so (in the delivery and the log), and the
    retry policy takes over."""
    trickling = await slow("trickle")
    async with notifying_app(live_database, tmp_path, notification_timeout_s=0.5) as (_, http):
        try:
            org = await make_tenant(http, live_database)
            channel = await webhook(http, org, trickling.url)
            await fire_test_event(http, org, channel)
            [retried] = await wait_deliveries(
                http, org, channel, lambda items: items[0]["attempts"] >= 2, within=15
            )
            assert retried["status"] in ("pending", "delivering")  # not given up
            assert retried["last_error"] == "deadline exceeded (0.5 s)"
            # The second attempt is counted as it starts, before its request reaches the receiver.
            await wait_until(lambda: trickling.requests >= 2, within=15)
            logged = capfd.readouterr().out
            assert "notification_retry" in logged
            assert "deadline exceeded (0.5 s)" in logged
            assert "notification_record_failed" not in logged
        finally:
            await trickling.stop()


async def test_a_huge_answer_is_not_read_whole(live_database: Database, tmp_path: Path) -> None:
    """200 with a 64 MiB body: the status is the answer; the body is read up to a cap and
    the connection closed, so the receiver cannot make the server read (or hold) it all."""
    huge = await slow("huge")
    try:
        async with notifying_app(live_database, tmp_path) as (_, http):
            org = await make_tenant(http, live_database)
            channel = await webhook(http, org, huge.url)
            await fire_test_event(http, org, channel)
            await wait_deliveries(http, org, channel, all_delivered(1), within=15)
            await wait_until(huge.closed_by_client.is_set, within=15)
        assert not huge.sent_whole
        assert huge.body_bytes_sent < HUGE_BYTES
    finally:
        await huge.stop()
