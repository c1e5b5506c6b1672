"""The operator's side of quota: ``tally quota``, freeze, rebuild from the ledger, sweeps.

Runs the quota service against real NATS, Postgres and Redis; the CLI is invoked through
typer's runner in a thread (it runs its own event loop) on the test's namespace.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import select
from typer.testing import CliRunner, Result

from tally import metrics
from tally.cli.quota import app as quota_cli
from tally.db.tables import quota_ledger
from tally.events import (
    QuotaAlert,
    QuotaSettled,
    ReserveReply,
    ReserveRequest,
    RunRecorded,
    TokenTotals,
    UsageReply,
    UsageRequest,
    new_id,
    utcnow,
)
from tally.redis import connect_redis

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

DAY_TOKENS = 1_000


@pytest.fixture
def team() -> str:
    """A subscription name of the test's own: the session's ledger is shared by every test,
    and a rebuild restores the rows of the subscriptions the service knows."""
    return f"team-{new_id()[:8]}"


@pytest.fixture
def subscriptions(tmp_path: Path, team: str) -> Path:
    path = tmp_path / "subscriptions.yaml"
    body = {
        "subscriptions": [
            {"name": team, "kind": "payg", "limits": {"day": {"tokens": DAY_TOKENS}}},
            {"name": "spare", "kind": "prepaid", "enforcement": "soft"},
        ]
    }
    path.write_text(yaml.safe_dump(body))
    return path


async def cli(h: Harness, *args: str) -> Result:
    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.settings.namespace,
        "TALLY_TIMEOUT_S": "5",
    }
    return await asyncio.to_thread(CliRunner().invoke, quota_cli, list(args), env=env)


def json_out(result: Result) -> Any:
    """The JSON document a ``--json`` command printed (services in this process log too)."""
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("{"))
    return json.loads("\n".join(lines[start:]))


async def reserve(h: Harness, team: str, tokens: int, rid: str | None = None) -> ReserveReply:
    return await h.client.request(
        ReserveRequest(
            subscription=team, tokens=tokens, cost_usd=0.0, reservation_id=rid or new_id()
        ),
        ReserveReply,
        step="quota",
    )


async def day(h: Harness, team: str) -> dict[str, Any]:
    reply = await h.client.request(UsageRequest(), UsageReply, step="quota")
    return next(s["day"] for s in reply.subscriptions if s["subscription"] == team)


async def settle(h: Harness, reservation_id: str, tokens: int) -> QuotaSettled:
    now = utcnow()
    recorded = RunRecorded(
        run_id=f"run-{new_id()}",
        task_id=f"task-{new_id()}",
        reservation_id=reservation_id,
        outcome="complete",
        success=True,
        started_at=now - timedelta(minutes=5),
        finished_at=now,
        actual_hours=0.1,
        tokens=TokenTotals(input_tokens=tokens),
    )
    async with h.client.watch(QuotaSettled, lambda s: s.reservation_id == reservation_id) as q:
        await h.client.publish(recorded)
        return await h.next_item(q, what="quota.settled")


async def test_quota_shows_bars_and_json(harness: Harness, subscriptions: Path, team: str) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    assert (await reserve(h, team, 250)).ok

    shown = await cli(h)
    assert shown.exit_code == 0, shown.output
    assert team in shown.stdout and "25.0%" in shown.stdout
    assert "remaining 750 of 1,000" in shown.stdout

    as_json = await cli(h, "--json")
    body = json_out(as_json)
    team = next(s for s in body["subscriptions"] if s["subscription"] == team)
    assert (team["day"]["reserved_tokens"], team["day"]["limit_tokens"]) == (250, DAY_TOKENS)


async def test_freeze_refuses_reservations_until_unfrozen(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    frozen = await cli(h, "freeze", team, "--json")
    assert frozen.exit_code == 0, frozen.output
    assert json_out(frozen) == {"subscription": team, "frozen": True}
    refused = await reserve(h, team, 10)
    assert not refused.ok and refused.reason == "frozen"
    assert "(frozen)" in (await cli(h)).stdout

    assert (await cli(h, "unfreeze", team)).exit_code == 0
    assert (await reserve(h, team, 10)).ok

    unknown = await cli(h, "freeze", "ghost")
    assert unknown.exit_code == 2
    assert "ghost" in unknown.output


async def flush_redis(h: Harness) -> None:
    """Lose every Redis key of the test's namespace, as a Redis without persistence would."""
    redis = connect_redis(h.settings.redis_url)
    keys = [k async for k in redis.scan_iter(match=f"*{h.settings.namespace}*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def test_the_freeze_switch_survives_redis_losing_its_data(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    assert (await cli(h, "freeze", team)).exit_code == 0
    await flush_redis(h)

    rebuilt = await cli(h, "rebuild", "--json")
    assert rebuilt.exit_code == 0, rebuilt.output
    refused = await reserve(h, team, 10)
    assert not refused.ok and refused.reason == "frozen"
    assert json_out(rebuilt)["frozen"] == [team]
    assert "(frozen)" in (await cli(h)).stdout

    # Unfreezing is recorded too: a later loss and rebuild does not freeze it again.
    assert (await cli(h, "unfreeze", team)).exit_code == 0
    await flush_redis(h)
    rebuilt = await cli(h, "rebuild")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "(frozen)" not in rebuilt.stdout
    assert (await reserve(h, team, 10)).ok


async def test_rebuild_restores_counters_and_live_reservations_after_redis_loses_them(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    async with h.client.watch(QuotaAlert, lambda a: a.subscription == team) as alerts:
        done = await reserve(h, team, 500)
        await settle(h, done.reservation_id, 300)
        live = await reserve(h, team, 500)  # 800 of 1000: past 75 %
        assert live.ok
        await h.client.nc.flush()
        assert [alerts.get_nowait().threshold_pct for _ in range(alerts.qsize())] == [75]
        before = await day(h, team)
        assert (before["used_tokens"], before["reserved_tokens"]) == (300, 500)

        await flush_redis(h)
        lost = await day(h, team)
        assert (lost["used_tokens"], lost["reserved_tokens"]) == (0, 0)

        rebuilt = await cli(h, "rebuild", "--json")
        assert rebuilt.exit_code == 0, rebuilt.output
        assert json_out(rebuilt)["reservations"] == 1
        after = await day(h, team)
        assert (after["used_tokens"], after["reserved_tokens"]) == (300, 500)

        # The restored reservation settles like any other, and 75 % does not alert again.
        settled = await settle(h, live.reservation_id, 450)
        assert (settled.status, settled.reserved_tokens) == ("settled", 500)
        assert (await day(h, team))["used_tokens"] == 750
        await h.client.nc.flush()
        assert alerts.empty()


async def test_expired_reservations_are_swept_into_the_ledger(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions, sweep_interval_s=0.2)
    held = await h.client.request(
        ReserveRequest(
            subscription=team, tokens=400, cost_usd=0.0, reservation_id=new_id(), ttl_s=1
        ),
        ReserveReply,
        step="quota",
    )
    assert held.ok

    async def expired() -> list[Any]:
        return await h.rows(
            select(quota_ledger.c.op, quota_ledger.c.tokens).where(
                quota_ledger.c.reservation_id == held.reservation_id, quota_ledger.c.op == "expire"
            )
        )

    rows = await h.eventually(expired, what="an expire row in the ledger")
    assert [tuple(r) for r in rows] == [("expire", 400)]
    assert (await day(h, team))["reserved_tokens"] == 0


def recorded_run(reservation_id: str, tokens: int) -> RunRecorded:
    now = utcnow()
    return RunRecorded(
        run_id=f"run-{new_id()}",
        task_id=f"task-{new_id()}",
        reservation_id=reservation_id,
        outcome="complete",
        success=True,
        started_at=now - timedelta(minutes=5),
        finished_at=now,
        actual_hours=0.1,
        tokens=TokenTotals(input_tokens=tokens),
    )


async def test_a_run_whose_reservation_redis_lost_is_ledgered_and_counted_after_a_rebuild(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    """Not dropped with an info line: the ledger keeps the usage, a metric and a warning
    say the counters are short, and a rebuild counts it."""
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    held = await reserve(h, team, 500)
    await flush_redis(h)
    before = metrics.QUOTA_SETTLED_FROM_LEDGER.labels(team)._value.get()
    await h.client.publish(recorded_run(held.reservation_id, 300))

    async def ledgered() -> Any:
        rows = await h.rows(
            select(quota_ledger.c.op, quota_ledger.c.tokens).where(
                quota_ledger.c.reservation_id == held.reservation_id,
                quota_ledger.c.op == "resettle",
            )
        )
        return rows or None

    assert await h.eventually(ledgered, what="the settle in the ledger") == [("resettle", 300)]
    assert metrics.QUOTA_SETTLED_FROM_LEDGER.labels(team)._value.get() == before + 1
    assert (await cli(h, "rebuild")).exit_code == 0
    assert (await day(h, team))["used_tokens"] == 300


async def test_a_run_naming_a_reservation_quota_never_made_is_dead_lettered(
    harness: Harness, subscriptions: Path, team: str
) -> None:
    h = harness
    await h.start("quota", subscriptions_path=subscriptions)
    async with h.dead_letters("quota") as letters:
        await h.client.publish(recorded_run(f"res-forged-{new_id()}", 500))
        letter = await h.next_item(letters, what="the dead letter")
    assert "unknown to quota" in letter.error
