"""Quota alerts as history: the reporter records each ``quota.alert`` the quota service
fires (once, whatever is redelivered) and serves them at ``GET /quota/alerts``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import yaml

from tally.events import QuotaAlert, ReserveReply, ReserveRequest, new_id
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

TEAM = "team-alerts"
DAY_TOKENS = 1_000
#: The subscription's own thresholds: the quota service alerts at these, not 75/90/100.
THRESHOLDS = [50, 75]


@pytest.fixture
def subscriptions(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {
                        "name": TEAM,
                        "kind": "payg",
                        "enforcement": "hard",
                        "limits": {"day": {"tokens": DAY_TOKENS}},
                        "alert_thresholds": THRESHOLDS,
                    }
                ]
            }
        )
    )
    return path


def client(app: AsgiFastStream, headers: dict[str, str] = ADMIN) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers
    )


async def test_a_reservation_past_75_percent_is_an_alert_the_api_lists(
    harness: Harness, workspace: str, subscriptions: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    reporter = await h.start("reporter")
    held = await h.client.request(
        ReserveRequest(
            subscription=TEAM,
            tokens=760,
            cost_usd=0.0,
            reservation_id=f"res-{new_id()}",
            workspace=workspace,
        ),
        ReserveReply,
        step="quota",
    )
    assert held.ok

    async with client(reporter) as http:

        async def listed() -> list[dict[str, object]] | None:
            got = await http.get("/quota/alerts", params={"workspace": workspace, "since": "1d"})
            assert got.status_code == 200, got.text
            alerts: list[dict[str, object]] = got.json()["alerts"]
            return alerts if len(alerts) == len(THRESHOLDS) else None

        alerts = await h.eventually(listed, what="both alerts listed")
        assert [a["threshold_pct"] for a in alerts] == [75, 50]  # newest first
        for a in alerts:
            assert (a["subscription"], a["period"], a["metric"]) == (TEAM, "day", "tokens")
            assert (a["used"], a["limit"], a["workspace"]) == (760, DAY_TOKENS, workspace)
        # Another workspace's view has none of them.
        other = await http.get("/quota/alerts", params={"workspace": f"{workspace}-b"})
        assert other.json()["alerts"] == []
        refused = await http.get("/quota/alerts", params={"since": "yesterday-ish"})
        assert refused.status_code == 400 and refused.json()["error"]["field"] == "since"
        # The gauges' ticks come from /quota: the thresholds in force, not 75/90/100.
        usage = (await http.get("/quota")).json()
        (team,) = [s for s in usage["subscriptions"] if s["subscription"] == TEAM]
        assert team["alert_thresholds"] == THRESHOLDS


async def test_alerts_are_recorded_once_and_invalid_ones_dead_lettered(
    harness: Harness, workspace: str
) -> None:
    h = harness
    reporter = await h.start("reporter")
    alert = QuotaAlert(
        subscription="claude-max",
        window="month",
        window_id="m:2026-11",
        metric="usd",
        threshold_pct=90,
        used=90.5,
        limit=100.0,
        workspace=workspace,
    )
    async with h.dead_letters("reporter") as letters:
        await h.client.publish(alert)
        await h.redeliver(alert)
        bad = json.loads(alert.to_json())
        bad.update(event_id=f"bad-{new_id()}", threshold_pct="ninety")
        await h.publish_raw(QuotaAlert.subject, json.dumps(bad).encode(), bad["event_id"])
        letter = await h.next_item(letters, what="the invalid alert's dead letter")
    assert "threshold_pct" in letter.error
    await h.drained("reporter", QuotaAlert.subject)

    async with client(reporter) as http:
        got = (await http.get("/quota/alerts", params={"workspace": workspace})).json()
        token = await http.post(
            "/auth/tokens",
            json={"name": "a", "workspace": workspace, "scopes": ["reports:read"]},
        )
    assert [(a["event_id"], a["used"], a["limit"]) for a in got["alerts"]] == [
        (alert.event_id, 90_500_000, 100_000_000)  # dollars kept as micro-dollars
    ]
    bound = {"Authorization": f"Bearer {token.json()['token']}"}
    async with client(reporter, bound) as http:
        own = (await http.get("/quota/alerts")).json()["alerts"]
        elsewhere = await http.get("/quota/alerts", params={"workspace": "someone-else"})
    assert [a["event_id"] for a in own] == [alert.event_id]
    assert elsewhere.status_code == 404
