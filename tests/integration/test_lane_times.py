"""The lane times kept per task (migration ``0017_lane_times``) stay exact however moves
arrive: out of order, late, from writers racing on the same task, in bulk, moved or
deleted afterwards. ``/lanes`` read from them says what the Python lane rules say over
every stored move, and the kept rows equal a rebuild from scratch."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import bindparam, delete, insert, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import String

from services.reporter.flow import lanes_view, read_flow
from services.reporter.lanes import StatusEvent
from tally.db.tables import (
    task_lane_days,
    task_lane_exits,
    task_lane_times,
    task_lanes,
    task_status_events,
)
from tally.events import new_id
from tests.integration.conftest import eventually
from tests.integration.test_report_lanes_sql import (
    NOW,
    assert_same_report,
    random_flows,
    reference,
)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Tasks in one statement above which the triggers lock the table (the migration's BULK).
BULK = 256


def rows_of(events: list[StatusEvent], workspace: str) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{e.task_id}-{j:03d}",
            "task_id": e.task_id,
            "workspace": workspace,
            "from_status": e.from_status,
            "to_status": e.to_status,
            "changed_at": e.at,
        }
        for j, e in enumerate(events)
    ]


async def stored(engine: AsyncEngine, workspace: str) -> list[StatusEvent]:
    ev = task_status_events
    async with engine.connect() as conn:
        found = await conn.execute(
            select(ev.c.task_id, ev.c.from_status, ev.c.to_status, ev.c.changed_at)
            .where(ev.c.workspace == workspace)
            .order_by(ev.c.changed_at, ev.c.event_id)
        )
        return [StatusEvent(*r) for r in found]


async def kept(engine: AsyncEngine, workspace: str) -> dict[str, set[tuple[Any, ...]]]:
    out = {}
    async with engine.connect() as conn:
        for table in (task_lanes, task_lane_times, task_lane_exits, task_lane_days):
            found = await conn.execute(select(table).where(table.c.workspace == workspace))
            out[table.name] = {
                tuple(tuple(v) if isinstance(v, list) else v for v in r) for r in found
            }
    return out


async def assert_exact(engine: AsyncEngine, workspace: str) -> None:
    """``/lanes`` agrees with the Python rules over every stored move, and the kept rows
    (per task and per day) are what rebuilding them from scratch gives."""
    events = await stored(engine, workspace)
    for since in (NOW - timedelta(days=30), NOW - timedelta(days=7)):
        view = lanes_view(await read_flow(engine, since, workspace), since, NOW)
        assert_same_report(view, reference(events, since), since)
    before = await kept(engine, workspace)
    ids = sorted({e.task_id for e in events})
    async with engine.begin() as conn:
        await conn.execute(
            text("SELECT task_lanes_rebuild(:ids)").bindparams(bindparam("ids", ids, ARRAY(String)))
        )
        await conn.execute(
            text(
                "SELECT task_lane_days_rebuild(array_agg(day), array_agg(CAST(:ws AS text))) "
                "FROM (SELECT DISTINCT date_bin('1 day', changed_at, "
                "TIMESTAMPTZ '2000-01-01 00:00:00+00') AS day "
                "FROM task_status_events WHERE workspace = :ws) k"
            ),
            {"ws": workspace},
        )
    assert await kept(engine, workspace) == before


async def insert_moves(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """One statement, as the tracker stores a batch."""
    await conn.execute(insert(task_status_events).values(rows))


async def waiting_for_a_lock(engine: AsyncEngine, pid: int) -> bool:
    async with engine.connect() as conn:
        waits = await conn.scalar(
            text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
        )
    return bool(waits == "Lock")


async def race(
    engine: AsyncEngine, first: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    """``first`` stored in a transaction left open while ``second`` is stored in another,
    which must wait for it; then both commit."""
    async with engine.connect() as a, engine.connect() as b:
        await a.begin()
        await insert_moves(a, first)
        await b.begin()
        pid = await b.scalar(text("SELECT pg_backend_pid()"))
        waiting = asyncio.create_task(insert_moves(b, second))
        await eventually(lambda: waiting_for_a_lock(engine, pid), what="the second writer waits")
        assert not waiting.done()
        await a.commit()
        await waiting
        await b.commit()


async def test_writers_racing_on_the_same_task_leave_exact_lanes(harness: Harness) -> None:
    """The defect this guards against: a writer rebuilding a task from what it can see
    while another writer's move of that task is not committed yet loses that move."""
    workspace = f"race-{new_id()[:8]}"
    rows = rows_of(random_flows(workspace, 40, seed=5), workspace)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_task.setdefault(r["task_id"], []).append(r)
    many = [t for t, moves in by_task.items() if len(moves) >= 3]
    a, b, c = many[:3]
    # two small writers on one task, the later move first
    await race(harness.engine, by_task[a][-1:], by_task[a][:-1])
    # a bulk writer (more tasks than BULK: it locks the table) against a small one
    filler = [
        {"event_id": f"{workspace}-f{i}", "task_id": f"{workspace}-f{i}",
         "workspace": workspace, "from_status": "backlog", "to_status": "completed",
         "changed_at": NOW - timedelta(days=100)}
        for i in range(2 * BULK + 2)
    ]  # fmt: skip
    await race(harness.engine, [*filler[: BULK + 1], *by_task[b][1:]], by_task[b][:1])
    await race(harness.engine, by_task[c][:1], [*filler[BULK + 1 :], *by_task[c][1:]])
    rest = [r for t, moves in by_task.items() if t not in (a, b, c) for r in moves]
    await harness.execute(insert(task_status_events), rest)
    await assert_exact(harness.engine, workspace)


async def test_moves_in_any_order_from_concurrent_writers_then_moved_and_deleted(
    harness: Harness,
) -> None:
    workspace = f"lanes-{new_id()[:8]}"
    rows = rows_of(random_flows(workspace, 120, seed=17), workspace)
    rnd = random.Random(8)
    rnd.shuffle(rows)
    late = rows[-30:]  # arrive after everything else is stored
    chunks: list[list[dict[str, Any]]] = []
    rest = rows[:-30]
    while rest:
        n = rnd.randrange(1, 6)
        chunks.append(rest[:n])
        rest = rest[n:]

    async def writer(mine: list[list[dict[str, Any]]]) -> None:
        for chunk in mine:
            async with harness.engine.begin() as conn:
                await insert_moves(conn, chunk)

    await asyncio.gather(*(writer(chunks[i::6]) for i in range(6)))
    for r in late:
        async with harness.engine.begin() as conn:
            await insert_moves(conn, [r])
    await assert_exact(harness.engine, workspace)

    # A redelivered move adds nothing; a move re-timed and a move taken back are rebuilt.
    async with harness.engine.begin() as conn:
        await conn.execute(pg_insert(task_status_events).on_conflict_do_nothing(), rows[:50])
    ev = task_status_events
    for r in rows[:10]:
        await harness.execute(
            update(ev)
            .where(ev.c.event_id == r["event_id"])
            .values(changed_at=r["changed_at"] - timedelta(hours=rnd.uniform(1, 50)))
        )
    await harness.execute(delete(ev).where(ev.c.event_id.in_([r["event_id"] for r in rows[10:25]])))
    await assert_exact(harness.engine, workspace)
