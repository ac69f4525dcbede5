"""Advisory pages over HTTP, with analytics rows written through the models: /analytics,
/recommendations, one finding, and the device page's health and wear section."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from fleetcore.auth.deps import SESSION_COOKIE
from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for
from tests.support.advisory import (
    DAY_MS,
    NOW_MS,
    add_finding,
    add_health,
    add_recommendation,
    watch,
)
from tests.support.devices import new_device
from tests.support.tenants import Tenant

CRITICAL_STOP = {"methods": {"stop": {"critical": True}, "set_speed": {"params": {}}}}


@asynccontextmanager
async def signed_in(app: FastAPI, tenant: Tenant, role: Role) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie of the tenant's user with `role`."""
    async with client_for(app) as http:
        http.cookies.set(SESSION_COOKIE, tenant.tokens[role])
        yield http


def text_of(html: str) -> str:
    """The page's text, tags removed and spaces collapsed, for sentence checks."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_pages_need_a_sign_in_and_are_in_the_navigation(
    app: FastAPI, client: httpx.AsyncClient, tenant: Tenant
) -> None:
    for path in ("/analytics", "/recommendations", "/analytics/findings/1"):
        answer = await client.get(path)
        assert answer.status_code == 303, path
    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/dashboard")
        assert '<a href="/analytics">Analytics</a>' in page.text
        assert '<a href="/recommendations">Recommendations</a>' in page.text


async def test_analytics_page_ranks_the_fleet_and_lists_findings(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    pump, _ = await new_device(client, tenant, name="Pump 1")
    fan, _ = await new_device(client, tenant, name="Fan 2")
    theirs, _ = await new_device(client, other_tenant, name="Their press")
    await add_health(db, tenant.org_id, pump, 0.31)
    await add_health(db, tenant.org_id, fan, 0.87, trend="stable", contributors=[])
    await add_health(db, other_tenant.org_id, theirs, 0.05)
    spike = await add_finding(
        db, tenant.org_id, pump, method="spike", severity="critical", ts=NOW_MS
    )
    older = await add_finding(db, tenant.org_id, fan, ts=NOW_MS - DAY_MS, key="current")
    await add_finding(db, other_tenant.org_id, theirs)

    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get("/analytics")
        assert page.status_code == 200, page.text
        html = page.text
        assert "Their press" not in html
        ranking = html[html.index('id="ranking-rows"') : html.index("</table>")]
        assert ranking.index("Pump 1") < ranking.index("Fan 2")  # worst first
        assert 'value="0.31"' in ranking  # the gauge
        assert "31%" in ranking
        assert "↓ worsening" in ranking
        assert "→ stable" in ranking
        pump_row = ranking[: ranking.index("Fan 2")]
        assert "<code>vibration</code> 2 robust_z" in pump_row  # the top contributor only
        assert "temperature" not in pump_row
        rows = html[html.index('id="finding-rows"') :]
        assert rows.index(f'data-finding-id="{spike}"') < rows.index(f'data-finding-id="{older}"')
        spike_row = rows[rows.index(f'data-finding-id="{spike}"') : rows.index("</tr>")]
        assert "6.5 / 4" in spike_row  # score vs threshold
        assert "1 … 2" in spike_row  # the expected band
        assert "sev-critical" in spike_row
        assert f'href="/devices/{pump}"' in spike_row
        assert "/static/js/advisory.js" in html

        one_device = await http.get("/analytics", params={"device": fan})
        assert f'data-finding-id="{older}"' in one_device.text
        assert f'data-finding-id="{spike}"' not in one_device.text
        bad = await http.get("/analytics", params={"device": "nope"})
        assert bad.status_code == 422

        row = await http.get(f"/analytics/findings/{spike}", params={"part": "row"})
        assert row.text.strip().startswith(f'<tr data-finding-id="{spike}"')
        detail = await http.get(f"/analytics/findings/{spike}")
        words = text_of(detail.text)
        assert "6.5 against a threshold of 4" in words
        assert "a spike" in words
        assert "vibration 9 is far above its usual 1 to 2" in words

        fragment = await http.get("/analytics", params={"part": "ranking"})
        assert "<html" not in fragment.text
        assert "Pump 1" in fragment.text

    async with signed_in(app, other_tenant, Role.ADMIN) as http:
        hidden = await http.get(f"/analytics/findings/{spike}")
        assert hidden.status_code == 404


async def test_recommendations_page_shows_proposals_first_with_their_evidence(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    mill, _ = await new_device(client, tenant, name="Mill 3")
    await watch(db, mill, {"keys": {"vibration": {}}}, safety_policy=CRITICAL_STOP)
    operator = str(tenant.user_ids[Role.OPERATOR])
    stop = await add_recommendation(
        db,
        tenant.org_id,
        mill,
        kind="stop",
        title="Stop the mill",
        method="stop",
        params={"reason": "vibration"},
        approvals=[{"by": operator, "role": "operator", "at": "2030-01-01T00:00:00Z"}],
        safety=[
            {
                "code": "INTERLOCK_ACTIVE",
                "message": "no speed increase while a critical alert is open",
                "details": {},
            }
        ],
    )
    inspect = await add_recommendation(db, tenant.org_id, mill, title="Inspect the mill bearings")
    done_later = await add_recommendation(
        db,
        tenant.org_id,
        mill,
        title="Look at the belt",
        status="approved",
        decided_by=tenant.user_ids[Role.MANAGER],
        decided_at=datetime.now(UTC),
        approvals=[{"by": str(tenant.user_ids[Role.MANAGER]), "role": "manager", "at": "x"}],
    )
    rejected = await add_recommendation(
        db,
        tenant.org_id,
        mill,
        title="Reduce speed",
        kind="reduce_speed",
        method="set_speed",
        params={"rpm": 1200},
        status="rejected",
        decided_by=tenant.user_ids[Role.OPERATOR],
        decided_at=datetime.now(UTC),
        decision_note="the batch must finish first",
    )

    async with signed_in(app, tenant, Role.OPERATOR) as http:
        page = await http.get("/recommendations")
        assert page.status_code == 200, page.text
        html = page.text
        proposed = html[html.index('id="proposed-list"') : html.index('id="history-list"')]
        history = html[html.index('id="history-list"') :]
        assert str(stop) in proposed
        assert str(inspect) in proposed
        assert str(done_later) in history
        assert str(rejected) in history
        assert str(stop) not in history

        stop_card = text_of(_card(html, stop))
        assert "send stop with" in stop_card
        assert "1 of 2" in stop_card  # critical: two people
        assert "critical: two people" in stop_card
        assert tenant.emails[Role.OPERATOR] in stop_card
        assert "no speed increase while a critical alert is open" in stop_card
        # The operator approved it already: only someone else can add the second approval.
        assert "You approved this; it needs 1 more approval" in stop_card
        assert "Approve</button>" not in _card(html, stop)
        assert "Reject</button>" in _card(html, stop)

        inspect_card = _card(html, inspect)
        words = text_of(inspect_card)
        assert "0 of 1" in words
        assert "no command: a person inspects the machine" in words
        assert "Vibration is rising toward its failure threshold." in words
        assert "vibration drifting, score 7.25 over threshold 5" in words
        assert "Remaining useful life of vibration: between 12 and 30 days, 80%" in words
        assert "Approve</button>" in inspect_card
        assert 'name="reason" type="text" required' in inspect_card
        assert "Mark done" not in inspect_card

        assert "Mark done</button>" in _card(html, done_later)
        rejected_words = text_of(_card(html, rejected))
        assert "rejected by " + tenant.emails[Role.OPERATOR] in rejected_words
        assert "the batch must finish first" in rejected_words
        assert "Reject</button>" not in _card(html, rejected)

        card = await http.get(f"/recommendations/{inspect}", params={"part": "card"})
        assert card.text.strip().startswith("<article")
        assert "<html" not in card.text
        full = await http.get(f"/recommendations/{inspect}")
        assert "Inspect the mill bearings" in full.text
        assert (await http.get(f"/recommendations/{uuid.uuid4()}")).status_code == 404

    async with signed_in(app, tenant, Role.VIEWER) as http:
        html = (await http.get("/recommendations")).text
        assert "Inspect the mill bearings" in html
        for control in ("Approve</button>", "Reject</button>", "Mark done</button>", "rec-form"):
            assert control not in html, control


def _card(html: str, rec_id: uuid.UUID) -> str:
    start = html.index(f'data-recommendation-id="{rec_id}"')
    return html[start : html.index("</article>", start)]


async def test_device_page_shows_health_and_wear_or_nothing(
    app: FastAPI, client: httpx.AsyncClient, db: Database, tenant: Tenant
) -> None:
    pump, _ = await new_device(client, tenant, name="Pump 9")
    plain, _ = await new_device(client, tenant, name="Plain 1")
    waiting, _ = await new_device(client, tenant, name="Waiting 1")
    await watch(
        db,
        pump,
        {
            "keys": {
                "vibration": {"wear": {"threshold": 12.0}},
                "temperature": {"wear": {"threshold": 90.0, "min_points": 150}},
                "current": {"wear": {"threshold": 30.0}},
                "bearing": {"wear": {"threshold": 5.0}},
            }
        },
    )
    await watch(db, waiting, {"keys": {"vibration": {}}})
    wear = {
        "vibration": {
            "status": "ok",
            "now_ms": NOW_MS,
            "eta_ms": NOW_MS + 20 * DAY_MS,
            "low_ms": NOW_MS + 12 * DAY_MS,
            "high_ms": NOW_MS + 30 * DAY_MS,
            "level": 0.8,
            "model": "linear",
            "points": 240,
            "current": 8.0,
            "threshold": 12.0,
        },
        "temperature": {"status": "not_enough_data", "points": 40},
        "current": {"status": "not_degrading", "points": 300, "now_ms": NOW_MS},
    }
    await add_health(db, tenant.org_id, pump, 0.42, wear=wear)

    async with signed_in(app, tenant, Role.VIEWER) as http:
        page = await http.get(f"/devices/{pump}")
        assert page.status_code == 200, page.text
        html = page.text
        assert 'data-analytics="1"' in html
        assert 'value="0.42"' in html
        words = text_of(html)
        assert "42%" in words
        assert "↓ worsening" in words
        assert "(52% a day ago)" in words
        assert "vibration · findings: 2 robust_z \u221230 points" in words
        assert "temperature · wear: failure within 12 days \u221210 points" in words
        rul = {
            key: text_of(html[html.index(f'data-wear-key="{key}"') :].split("</tr>")[0])
            for key in ("vibration", "temperature", "current", "bearing")
        }
        assert "between 12 and 30 days, 80%" in rul["vibration"]
        assert "not enough data (40 of 150 hourly points)" in rul["temperature"]
        assert "not degrading" in rul["current"]
        assert "not enough data (0 of 100 hourly points)" in rul["bearing"]  # none stored yet

        without = await http.get(f"/devices/{plain}")
        assert without.status_code == 200
        assert "device-analytics" not in without.text
        assert "data-analytics" not in without.text

        scoring = await http.get(f"/devices/{waiting}")
        assert "No health score yet" in scoring.text
        assert 'data-analytics="1"' in scoring.text
