"""``token_usage_daily`` equals joining ``token_usage`` to its runs and their assignments as
they stand, whatever order and whichever transactions write them: calls before their run,
runs given an agent or assignment later, assignments stored late, calls re-priced, moved
or deleted, and writers running at the same time. ``/tokens`` and the dashboard read the
same figures from it as a scan of the calls gives."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import delete, func, insert, literal, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.reporter.insights import dashboard
from services.reporter.repo import TOKEN_GROUPS, ReportRepo
from services.reporter.series import series
from tally.db.tables import assignments, runs, token_usage, token_usage_daily
from tally.events import new_id
from tests.integration.conftest import eventually

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Calls spread over the days around it; windows start on and off the hour and the day.
T0 = datetime(2026, 3, 9, 13, 21, 5, tzinfo=UTC)
KEY = ("day", "workspace", "agent_id", "subscription", "command", "model", "provider")
COUNTERS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_micros",
    "unpriced_calls",
    "duration_ms",
)


def calls(workspace: str, n: int, seed: int, runs_n: int = 6) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        known = rnd.random() >= 0.1
        out.append(
            {
                "event_id": f"{workspace}-{seed}-{i}",
                "run_id": f"{workspace}-run-{rnd.randrange(runs_n)}",
                "workspace": workspace,
                "model": rnd.choice(["m-a", "m-b", None]),
                "provider": rnd.choice(["p-a", None]),
                "command": rnd.choice(["build", None]),
                "input_tokens": rnd.randrange(5_000),
                "output_tokens": rnd.randrange(900),
                "cache_read_tokens": rnd.randrange(300),
                "reasoning_tokens": rnd.randrange(50),
                "cost_micros": rnd.randrange(90_000) if known else None,
                "cost_known": known,
                "duration_ms": rnd.choice([None, float(rnd.randrange(4_000))]),
                "at": T0
                + timedelta(minutes=rnd.randrange(-4 * 1440, 2 * 1440), seconds=rnd.random()),
            }
        )
    return out


def run_row(workspace: str, i: int, **values: Any) -> dict[str, Any]:
    return {
        "run_id": f"{workspace}-run-{i}",
        "workspace": workspace,
        "task_id": f"{workspace}-task-{i % 3}",
        **{"agent_id": None, "command": None, "assignment_id": None, **values},
    }


def assignment_row(workspace: str, name: str, subscription: str) -> dict[str, Any]:
    return {
        "assignment_id": f"{workspace}-{name}",
        "task_id": f"{workspace}-task-0",
        "workspace": workspace,
        "model": "m-a",
        "subscription": subscription,
        "strategy": "test",
        "reservation_id": f"{workspace}-res-{name}",
        "detail": {},
    }


def _figures(rows: list[Any]) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    out = {}
    for r in rows:
        m = r._mapping
        figures = tuple(
            int(m[c]) if c != "duration_ms" else round(float(m[c]), 3) for c in COUNTERS
        )
        if any(figures):  # a key all of whose calls moved elsewhere keeps a row of zeros
            out[tuple(m[k] for k in KEY)] = figures
    return out


async def daily_matches(harness: Harness, workspace: str) -> dict[tuple[Any, ...], Any]:
    """The rollup's rows of ``workspace`` equal the grouped join of its calls; returns them."""
    t = token_usage.c
    day = func.date_bin(text("'1 day'"), t.at, literal(datetime(2000, 1, 1, tzinfo=UTC)))
    raw = (
        select(
            day.label("day"),
            t.workspace,
            runs.c.agent_id,
            assignments.c.subscription,
            func.coalesce(t.command, runs.c.command).label("command"),
            t.model,
            t.provider,
            func.count().label("calls"),
            *(
                func.coalesce(func.sum(t[c]), 0).label(c)
                for c in COUNTERS
                if c not in ("calls", "unpriced_calls")
            ),
            func.count().filter(~t.cost_known).label("unpriced_calls"),
        )
        .select_from(
            token_usage.outerjoin(runs, runs.c.run_id == t.run_id).outerjoin(
                assignments, assignments.c.assignment_id == runs.c.assignment_id
            )
        )
        .where(t.workspace == workspace)
        .group_by(*(text(str(i)) for i in range(1, 8)))
    )
    d = token_usage_daily.c
    rolled = select(*(d[k] for k in (*KEY, *COUNTERS))).where(d.workspace == workspace)
    expected = _figures(await harness.rows(raw))
    got = _figures(await harness.rows(rolled))
    assert got == expected
    return got


async def test_rollup_follows_every_write_in_any_order(harness: Harness) -> None:
    ws = f"day-{new_id()[:8]}"
    # Calls first: their runs are not stored yet.
    first = calls(ws, 300, seed=1)
    await harness.execute(insert(token_usage), first)
    await daily_matches(harness, ws)
    # The runs arrive, some naming assignments not stored yet, one with nothing at all.
    await harness.execute(
        insert(runs),
        [
            run_row(ws, 0, agent_id="ag-0", command="plan", assignment_id=f"{ws}-a0"),
            run_row(ws, 1, agent_id="ag-1", assignment_id=f"{ws}-a1"),
            run_row(ws, 2, agent_id="ag-0", command="test"),
            run_row(ws, 3),
        ],
    )
    await daily_matches(harness, ws)
    await harness.execute(insert(assignments), [assignment_row(ws, "a0", "team")])
    await harness.execute(insert(assignments), [assignment_row(ws, "a1", "solo")])
    await daily_matches(harness, ws)
    # Runs learn or change their agent, command and assignment; one is deleted.
    await harness.execute(
        update(runs).where(runs.c.run_id == f"{ws}-run-3").values(agent_id="ag-3", command="x")
    )
    await harness.execute(
        update(runs).where(runs.c.run_id == f"{ws}-run-1").values(assignment_id=f"{ws}-a0")
    )
    await harness.execute(
        update(runs)
        .where(runs.c.run_id.in_([f"{ws}-run-0", f"{ws}-run-2"]))
        .values(agent_id="ag-9")
    )
    # A write that changes none of them (a run's totals) moves nothing.
    await harness.execute(update(runs).where(runs.c.workspace == ws).values(outcome="complete"))
    await daily_matches(harness, ws)
    # Redeliveries add nothing; late calls land days back; calls are re-priced, moved, deleted.
    again = pg_insert(token_usage).on_conflict_do_nothing()
    await harness.execute(again, [*first[:50], *calls(ws, 60, seed=2)])
    late = calls(ws, 40, seed=3)
    for c in late:
        c["at"] -= timedelta(days=3)
    await harness.execute(insert(token_usage), late)
    await harness.execute(
        update(token_usage)
        .where(token_usage.c.workspace == ws, token_usage.c.model == "m-a")
        .values(cost_micros=token_usage.c.input_tokens * 3, cost_known=True, model="m-c")
    )
    await harness.execute(
        update(token_usage)
        .where(token_usage.c.workspace == ws, token_usage.c.input_tokens < 900)
        .values(at=token_usage.c.at + timedelta(days=1, hours=2), run_id=f"{ws}-run-1")
    )
    await harness.execute(
        delete(token_usage).where(token_usage.c.workspace == ws, token_usage.c.output_tokens < 200)
    )
    await daily_matches(harness, ws)
    # A hand fix of a subscription; an assignment and a run removed.
    await harness.execute(
        update(assignments)
        .where(assignments.c.assignment_id == f"{ws}-a0")
        .values(subscription="enterprise")
    )
    await harness.execute(delete(assignments).where(assignments.c.assignment_id == f"{ws}-a1"))
    await harness.execute(delete(runs).where(runs.c.run_id == f"{ws}-run-2"))
    rows = await daily_matches(harness, ws)
    assert {k[3] for k in rows} >= {"enterprise", None}
    assert {k[2] for k in rows} >= {"ag-9", "ag-1", "ag-3", None}


async def _backend(conn: AsyncConnection) -> int:
    return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _waiting(harness: Harness, pid: int) -> bool:
    """Whether backend ``pid`` waits for a lock (another transaction's advisory lock)."""
    found = await harness.rows(
        text(f"SELECT 1 FROM pg_stat_activity WHERE pid = {pid} AND wait_event_type = 'Lock'")
    )
    return bool(found)


async def _race(harness: Harness, first: Any, second: Any) -> None:
    """``first`` written and left uncommitted while another transaction writes ``second``
    (it may wait for ``first``), then both committed, ``first`` first."""
    async with harness.engine.connect() as a, harness.engine.connect() as b:
        await a.execute(first)
        pid = await _backend(b)
        second_done = asyncio.create_task(b.execute(second))

        async def waiting_or_done() -> bool:
            return second_done.done() or await _waiting(harness, pid)

        await eventually(waiting_or_done, timeout=10, what="the second write to wait or end")
        await a.commit()
        await asyncio.wait_for(second_done, timeout=10)
        await b.commit()


async def test_a_run_and_its_first_calls_written_at_once_by_separate_transactions(
    harness: Harness,
) -> None:
    ws = f"race-{new_id()[:8]}"
    # The run's row first (uncommitted) while its first calls are written.
    await harness.execute(insert(assignments), [assignment_row(ws, "a0", "team")])
    await _race(
        harness,
        insert(runs).values(run_row(ws, 0, agent_id="ag-0", assignment_id=f"{ws}-a0")),
        insert(token_usage).values(calls(ws, 30, seed=4, runs_n=1)),
    )
    # The calls first (uncommitted) while the run's row is written.
    await _race(
        harness,
        insert(token_usage).values(calls(ws, 30, seed=5, runs_n=2)),
        insert(runs).values(run_row(ws, 1, agent_id="ag-1", assignment_id=f"{ws}-a1")),
    )
    # The run's assignment stored while the run's row is written, both ways round.
    await _race(
        harness,
        insert(runs).values(run_row(ws, 2, agent_id="ag-2", assignment_id=f"{ws}-a2")),
        insert(assignments).values(assignment_row(ws, "a2", "solo")),
    )
    await _race(
        harness,
        insert(assignments).values(assignment_row(ws, "a1", "solo")),
        update(runs).where(runs.c.run_id == f"{ws}-run-0").values(assignment_id=f"{ws}-a1"),
    )
    await harness.execute(insert(token_usage), calls(ws, 30, seed=6, runs_n=3))
    rows = await daily_matches(harness, ws)
    assert not any(k[2] is None for k in rows), "calls counted under no agent"
    assert {k[3] for k in rows} == {"solo"}


async def test_concurrent_writers_keep_it_exact(harness: Harness) -> None:
    """Several writers at once, as the tracker's consumers and the assigner write: calls,
    runs (new, or given another agent) and assignments, each in its own transaction, in
    any order, all on the same days and agents."""
    ws = f"conc-{new_id()[:8]}"
    n_runs = 12

    async def write(stmt: Any) -> None:
        async with harness.engine.begin() as conn:  # a deadlock would fail it
            await conn.execute(stmt)

    async def writer(w: int) -> None:
        rnd = random.Random(w)
        for step in range(8):
            run_i = rnd.randrange(n_runs)
            agent = f"ag-{rnd.randrange(3)}"
            stmts: list[Any] = [
                insert(token_usage).values(calls(ws, 25, seed=100 * w + step, runs_n=n_runs)),
                pg_insert(runs)
                .values(run_row(ws, run_i, agent_id=agent, assignment_id=f"{ws}-a{run_i % 4}"))
                .on_conflict_do_update(index_elements=["run_id"], set_={"agent_id": agent}),
            ]
            if step == 3:
                stmts.append(
                    pg_insert(assignments)
                    .values(assignment_row(ws, f"a{w % 4}", f"sub-{w % 4}"))
                    .on_conflict_do_nothing()
                )
            rnd.shuffle(stmts)
            for stmt in stmts:
                await write(stmt)

    await asyncio.gather(*(writer(w) for w in range(8)))
    rows = await daily_matches(harness, ws)
    assert {k[3] for k in rows} >= {"sub-0", "sub-1", "sub-2", "sub-3"}


async def test_reports_read_the_same_figures_as_a_scan(harness: Harness) -> None:
    ws = f"rep-{new_id()[:8]}"
    rows = calls(ws, 500, seed=7)
    await harness.execute(
        insert(assignments), [assignment_row(ws, "a0", "team"), assignment_row(ws, "a1", "solo")]
    )
    run_of = {
        f"{ws}-run-{i}": run_row(
            ws, i, agent_id=f"agent-{i % 2}", command=f"cmd-{i % 2}", assignment_id=f"{ws}-a{i % 3}"
        )
        for i in range(5)  # run 5 has no row: its calls group under "(none)"
    }
    await harness.execute(insert(runs), list(run_of.values()))
    await harness.execute(insert(token_usage), rows)
    subscription_of = {"a0": "team", "a1": "solo"}
    repo = ReportRepo(harness.engine)
    day0 = T0.replace(hour=0, minute=0, second=0, microsecond=0)
    windows = (T0 - timedelta(days=3, hours=5, minutes=1), day0 - timedelta(days=2), T0)
    for since in windows:
        for by in TOKEN_GROUPS:
            report, groups = await repo.token_report(since=since, by=by, workspace=ws)
            expected = scanned(rows, since, by, run_of)
            assert groups == len(expected)
            assert {r["key"]: _row_figures(r) for r in report} == expected, (since, by)
        # The series in days, and spend by subscription, over the same window.
        got = await series(harness.engine, since, T0 + timedelta(days=3), ws, "day")
        window = [r for r in rows if r["at"] >= since]
        assert sum(p.input_tokens for p in got.points) == sum(r["input_tokens"] for r in window)
        assert sum(p.spend_micros for p in got.points) == sum(r["cost_micros"] or 0 for r in window)
        spend: dict[str, int] = {}
        for r in window:
            run = run_of.get(r["run_id"])
            name = run and subscription_of.get(run["assignment_id"].removeprefix(f"{ws}-"))
            spend[name or "(none)"] = spend.get(name or "(none)", 0) + (r["cost_micros"] or 0)
        assert {s.subscription: s.spend_micros for s in got.by_subscription} == spend
        stats = await dashboard(harness.engine, since, T0 + timedelta(days=3), ws, "-")
        assert stats.input_tokens == sum(r["input_tokens"] for r in window)
        assert stats.spend_micros == sum(r["cost_micros"] or 0 for r in window)
    # A limit answers the groups of highest cost, and how many there are.
    top, groups = await repo.token_report(since=windows[0], by="task", workspace=ws, limit=2)
    full, _ = await repo.token_report(since=windows[0], by="task", workspace=ws)
    assert groups == len(full) > 2 and top == full[:2]
    assert [r["cost_micros"] for r in full] == sorted(
        (r["cost_micros"] for r in full), reverse=True
    )


def _row_figures(r: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(round(r[c], 3) if c == "duration_ms" else r[c] for c in COUNTERS)


def scanned(
    rows: list[dict[str, Any]], since: datetime, by: str, run_of: dict[str, Any]
) -> dict[str, tuple[Any, ...]]:
    """What /tokens must answer, from the stored rows in Python."""
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
        acc = out.setdefault(key if key is not None else "(none)", dict.fromkeys(COUNTERS, 0))
        acc["calls"] += 1
        acc["unpriced_calls"] += not r["cost_known"]
        for k in COUNTERS[1:-2]:
            acc[k] += r.get(k) or 0
        acc["duration_ms"] += r.get("duration_ms") or 0
    return {k: _row_figures(v) for k, v in out.items()}


async def test_a_bulk_write_of_many_runs_succeeds_holding_few_locks(harness: Harness) -> None:
    """A restore or a benchmark's COPY of a year of calls touches a run per few calls: the
    locks it takes stay bounded (a lock per run would fill Postgres's shared lock table,
    failing that write and every other session's)."""
    ws = f"bulk-{new_id()[:8]}"
    rows = calls(ws, 12_000, seed=8, runs_n=1)
    for i, r in enumerate(rows):
        r["run_id"] = f"{ws}-run-{i}"
    async with harness.engine.begin() as conn:
        await conn.execute(insert(token_usage), rows)
        held = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND pid = pg_backend_pid()"
                )
            )
        ).scalar_one()
    assert held <= 256
    await daily_matches(harness, ws)
