"""The quota service over the bus: reserve, release, settle, usage and alerts.

Runs against real NATS, Postgres and Redis, with a subscriptions file of the test's own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import select

from tally.db.tables import quota_ledger
from tally.events import (
    QuotaAlert,
    QuotaSettled,
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    RunRecorded,
    TokenTotals,
    UsageReply,
    UsageRequest,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: One subscription with a small daily token limit and the default alert thresholds.
TEAM = "team"
DAY_TOKENS = 1_000


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
                    }
                ]
            }
        )
    )
    return path


async def reserve(h: Harness, tokens: int, reservation_id: str | None = None) -> ReserveReply:
    return await h.client.request(
        ReserveRequest(
            subscription=TEAM,
            tokens=tokens,
            cost_usd=0.0,
            reservation_id=reservation_id or f"res-{new_id()}",
        ),
        ReserveReply,
        step="quota",
    )


async def day_usage(h: Harness) -> dict[str, Any]:
    reply = await h.client.request(UsageRequest(), UsageReply, step="quota")
    return next(s["day"] for s in reply.subscriptions if s["subscription"] == TEAM)


async def ledger_ops(h: Harness, reservation_id: str) -> list[tuple[str, int]]:
    rows = await h.rows(
        select(quota_ledger.c.op, quota_ledger.c.tokens)
        .where(quota_ledger.c.reservation_id == reservation_id)
        .order_by(quota_ledger.c.id)
    )
    return [(r.op, r.tokens) for r in rows]


async def test_reserve_until_the_limit_then_release_makes_room(
    harness: Harness, subscriptions: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    first = await reserve(h, 600)
    assert first.ok and first.expires_at is not None and first.expires_at > utcnow()

    refused = await reserve(h, 600)
    assert not refused.ok
    assert "over_limit" in refused.reason
    # A daily limit frees up at the next UTC midnight.
    assert refused.retry_after is not None
    assert utcnow() < refused.retry_after <= utcnow() + timedelta(days=1)
    assert (await day_usage(h))["reserved_tokens"] == 600

    released = await h.client.request(
        ReleaseRequest(reservation_id=first.reservation_id), ReleaseReply, step="quota"
    )
    assert released.status == "released"
    again = await h.client.request(
        ReleaseRequest(reservation_id=first.reservation_id), ReleaseReply, step="quota"
    )
    assert again.status == "already_released"
    assert (await day_usage(h))["reserved_tokens"] == 0
    assert (await reserve(h, 600)).ok
    assert await ledger_ops(h, first.reservation_id) == [("reserve", 600), ("release", 600)]


async def test_a_recorded_run_settles_its_reservation(
    harness: Harness, subscriptions: Path
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    held = await reserve(h, 500)
    assert held.ok
    now = utcnow()
    recorded = RunRecorded(
        run_id=f"run-{new_id()}",
        task_id=f"task-{new_id()}",
        reservation_id=held.reservation_id,
        outcome="complete",
        success=True,
        started_at=now - timedelta(minutes=20),
        finished_at=now,
        actual_hours=1 / 3,
        tokens=TokenTotals(input_tokens=200, output_tokens=80, cache_read_tokens=20),
        cost_usd=0.0042,
    )
    async with h.client.watch(
        QuotaSettled, lambda s: s.reservation_id == held.reservation_id
    ) as settled_q:
        await h.client.publish(recorded)
        settled = await h.next_item(settled_q, what="quota.settled")

    assert settled.status == "settled" and settled.subscription == TEAM
    assert (settled.reserved_tokens, settled.actual_tokens) == (500, 300)
    assert settled.actual_cost_usd == pytest.approx(0.0042)
    assert await ledger_ops(h, held.reservation_id) == [("reserve", 500), ("settle", 300)]
    usage = await day_usage(h)
    assert (usage["used_tokens"], usage["reserved_tokens"]) == (300, 0)

    # A redelivered record settles nothing twice.
    await h.redeliver(recorded)
    await h.drained("quota", "run.recorded")
    assert await ledger_ops(h, held.reservation_id) == [("reserve", 500), ("settle", 300)]
    assert (await day_usage(h))["used_tokens"] == 300


async def test_alerts_fire_once_at_each_threshold(harness: Harness, subscriptions: Path) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    async with h.client.watch(QuotaAlert, lambda a: a.subscription == TEAM) as alerts:

        async def crossed() -> list[int]:
            # Alerts are published before the reply; a round trip flushes their delivery.
            await h.client.nc.flush()
            found = []
            while not alerts.empty():
                alert = alerts.get_nowait()
                assert (alert.window, alert.metric, alert.limit) == ("day", "tokens", DAY_TOKENS)
                found.append(alert.threshold_pct)
            return found

        assert (await reserve(h, 700)).ok
        assert await crossed() == []
        first = await reserve(h, 60)  # 760: past 75 %
        assert first.ok and await crossed() == [75]
        assert (await reserve(h, 150)).ok  # 910: past 90 %
        assert await crossed() == [90]
        # Going under and over 90 % again within the day alerts nobody twice.
        await h.client.request(
            ReleaseRequest(reservation_id=first.reservation_id), ReleaseReply, step="quota"
        )
        assert (await reserve(h, 60)).ok
        assert await crossed() == []
        assert (await reserve(h, 90)).ok  # exactly 1000: at 100 %
        assert await crossed() == [100]
        assert not (await reserve(h, 1)).ok
        assert await crossed() == []
