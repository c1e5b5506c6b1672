"""``token_usage_hourly`` stays exact for every write, and ``/tokens`` reads the same figures
from it as a scan of ``token_usage`` gives."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.reporter.repo import TOKEN_GROUPS, ReportRepo
from tally.db.tables import runs, token_usage, token_usage_hourly
from tally.events import new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Not on the hour: a window starting here reads a part hour from token_usage.
T0 = datetime(2026, 5, 4, 10, 37, 12, tzinfo=UTC)
SUMMED = (
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_micros",
    "duration_ms",
)


def calls(workspace: str, n: int, seed: int) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    return [
        {
            "event_id": f"{workspace}-{seed}-{i}",
            "run_id": f"{workspace}-run-{rnd.randrange(6)}",
            "workspace": workspace,
            "model": rnd.choice(["m-a", "m-b", None]),
            "provider": rnd.choice(["p-a", None]),
            "command": rnd.choice(["build", None]),
            "input_tokens": rnd.randrange(5_000),
            "output_tokens": rnd.randrange(900),
            "cache_read_tokens": rnd.randrange(300),
            "reasoning_tokens": rnd.randrange(50),
            "cost_micros": None if rnd.random() < 0.1 else rnd.randrange(90_000),
            "cost_known": rnd.random() >= 0.1,
            "duration_ms": rnd.choice([None, float(rnd.randrange(4_000))]),
            "at": T0 + timedelta(minutes=rnd.randrange(-300, 300), seconds=rnd.random()),
        }
        for i in range(n)
    ]


async def rollup_matches(harness: Harness, workspace: str) -> None:
    """The rollup's totals per run equal a scan of token_usage's."""
    raw, rolled = token_usage.c, token_usage_hourly.c

    def per_run(c: Any, count: Any) -> Any:
        return (
            select(
                c.run_id,
                count,
                *(func.coalesce(func.sum(c[k]), 0) for k in SUMMED),
            )
            .where(c.workspace == workspace)
            .group_by(c.run_id)
            .order_by(c.run_id)
        )

    expected = await harness.rows(per_run(raw, func.count()))
    got = await harness.rows(per_run(rolled, func.coalesce(func.sum(rolled.calls), 0)))
    got = [r for r in got if r[1] != 0]  # runs whose calls were all deleted
    assert [tuple(r) for r in got] == [tuple(r) for r in expected]


async def test_rollup_follows_inserts_redeliveries_updates_and_deletes(harness: Harness) -> None:
    workspace = f"roll-{new_id()[:8]}"
    first = calls(workspace, 300, seed=1)
    await harness.execute(insert(token_usage), first)
    await rollup_matches(harness, workspace)
    # A redelivery inserts nothing, so it adds nothing.
    again = pg_insert(token_usage).on_conflict_do_nothing()
    await harness.execute(again, [*first[:50], *calls(workspace, 40, seed=2)])
    await rollup_matches(harness, workspace)
    # The tracker re-prices and re-attributes calls; a fix deletes some.
    await harness.execute(
        update(token_usage)
        .where(token_usage.c.workspace == workspace, token_usage.c.model == "m-a")
        .values(cost_micros=token_usage.c.input_tokens * 3, cost_known=True, model="m-c")
    )
    await harness.execute(
        update(token_usage)
        .where(token_usage.c.workspace == workspace, token_usage.c.input_tokens < 800)
        .values(at=token_usage.c.at + timedelta(hours=2))
    )
    await rollup_matches(harness, workspace)
    await harness.execute(
        delete(token_usage).where(
            token_usage.c.workspace == workspace, token_usage.c.output_tokens < 300
        )
    )
    await rollup_matches(harness, workspace)


def scanned(rows: list[dict[str, Any]], since: datetime, by: str, run_of: dict[str, Any]) -> Any:
    """What /tokens must answer, computed from the stored rows in Python."""
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if r["at"] < since:
            continue
        run = run_of.get(r["run_id"], {})
        key = {
            "model": r["model"],
            "provider": r["provider"],
            "command": r["command"] or run.get("command"),
            "agent": run.get("agent_id"),
            "task": run.get("task_id"),
        }[by]
        acc = out.setdefault(key if key is not None else "(none)", dict.fromkeys(SUMMED, 0))
        acc["calls"] = acc.get("calls", 0) + 1
        acc["unpriced_calls"] = acc.get("unpriced_calls", 0) + (not r["cost_known"])
        for k in SUMMED:
            acc[k] += r.get(k) or 0
    return out


async def test_token_report_equals_a_scan_of_the_calls(harness: Harness) -> None:
    workspace = f"rep-{new_id()[:8]}"
    rows = calls(workspace, 500, seed=3)
    run_of = {
        f"{workspace}-run-{i}": {
            "run_id": f"{workspace}-run-{i}",
            "workspace": workspace,
            "task_id": f"task-{i % 3}",
            "agent_id": f"agent-{i % 2}",
            "command": f"cmd-{i % 2}",
        }
        for i in range(5)  # run 5 has no row: its calls group under "(none)"
    }
    await harness.execute(insert(runs), list(run_of.values()))
    await harness.execute(insert(token_usage), rows)
    repo = ReportRepo(harness.engine)
    for since in (T0 - timedelta(hours=3, minutes=1), T0, T0 + timedelta(seconds=1)):
        for by in TOKEN_GROUPS:
            report, _ = await repo.token_report(since=since, by=by, workspace=workspace)
            expected = scanned(rows, since, by, run_of)
            assert {r["key"] for r in report} == set(expected), (since, by)
            for r in report:
                want = expected[r["key"]]
                assert r["calls"] == want["calls"] and r["unpriced_calls"] == want["unpriced_calls"]
                for k in SUMMED:
                    assert r[k] == pytest.approx(want[k]), (since, by, r["key"], k)
