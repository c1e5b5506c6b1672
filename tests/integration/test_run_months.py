"""``run_months`` holds the month of every row of a run, whoever writes it and in whatever
order (late rows of an older month, worker calls without events, concurrent writers of
one run), and what the reporter reads within a run's months equals the run's rows read
without that bound: its timeline, and in ``GET /runs`` its calls and cost."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.reporter.listings import RunListParams, run_list
from services.reporter.repo import ReportRepo
from tally.db.tables import run_events, runs, token_usage
from tally.events import new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

MAY = datetime(2026, 5, 14, 9, 30, tzinfo=UTC)
#: The months holding rows of the given runs, from the rows themselves.
ROW_MONTHS = text(
    "SELECT DISTINCT run_id, date_trunc('month', at, 'UTC') FROM ("
    "SELECT run_id, at FROM run_events WHERE run_id = ANY(:ids) "
    "UNION ALL SELECT run_id, at FROM token_usage WHERE run_id = ANY(:ids)) r"
)
KEPT = text("SELECT run_id, month FROM run_months WHERE run_id = ANY(:ids)")


def event(run_id: str, at: datetime, workspace: str, kind: str = "note") -> dict[str, Any]:
    detail = {"kind": kind, "text": "step"} if kind == "note" else {"kind": kind, "worker": "w"}
    return {
        "event_id": f"{run_id}-{new_id()[:10]}",
        "run_id": run_id,
        "workspace": workspace,
        "kind": kind,
        "at": at,
        "detail": detail,
    }


def call(e: dict[str, Any], tokens: int) -> dict[str, Any]:
    """The worker call's usage row of event ``e``."""
    return {
        "event_id": e["event_id"],
        "run_id": e["run_id"],
        "workspace": e["workspace"],
        "model": "m-a",
        "input_tokens": tokens,
        "output_tokens": tokens // 10,
        "cost_micros": None if tokens % 7 == 0 else tokens * 3,
        "cost_known": tokens % 7 != 0,
        "at": e["at"],
    }


async def pairs(h: Harness, query: Any, ids: list[str]) -> list[tuple[str, datetime]]:
    async with h.engine.connect() as conn:
        return sorted((r[0], r[1]) for r in await conn.execute(query, {"ids": ids}))


async def months_match(
    h: Harness,
    ids: list[str],
    moved_from: Sequence[tuple[str, datetime]] = (),
) -> None:
    """``run_months`` holds exactly the months of the runs' rows (a pair may be twice),
    and the months rows were moved out of (``moved_from``: kept, never narrowed)."""
    rows = await pairs(h, ROW_MONTHS, ids)
    assert {run for run, _ in rows} == set(ids)
    assert sorted(set(await pairs(h, KEPT, ids))) == sorted({*rows, *moved_from})


async def test_months_follow_copies_late_rows_redeliveries_and_moves(harness: Harness) -> None:
    h = harness
    ws = f"span-{new_id()[:8]}"
    a, b, c = (f"{ws}-run-{n}" for n in "abc")
    first = [event(r, MAY + timedelta(minutes=i), ws) for r in (a, b) for i in range(20)]
    async with h.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        columns = ("event_id", "run_id", "workspace", "kind", "at", "detail")
        await raw.copy_records_to_table(
            "run_events",
            records=[(*(e[k] for k in columns[:-1]), json.dumps(e["detail"])) for e in first],
            columns=columns,
        )
    await months_match(h, [a, b])
    # Late rows of an older month; a worker call whose event came months later; a run
    # known by its calls alone.
    late = event(a, MAY - timedelta(days=130), ws, "worker_call")
    await h.execute(insert(run_events), [late])
    await h.execute(insert(token_usage), [call(late, 900)])
    await h.execute(insert(token_usage), [call(event(b, MAY + timedelta(days=95), ws), 500)])
    await h.execute(insert(token_usage), [call(event(c, MAY - timedelta(days=40), ws), 70)])
    await months_match(h, [a, b, c])
    # A redelivery stores nothing new; a fix moves a call to a later month.
    await h.execute(pg_insert(run_events).on_conflict_do_nothing(), [first[0], late])
    await h.execute(
        update(token_usage).where(token_usage.c.run_id == c).values(at=MAY + timedelta(days=200))
    )
    await months_match(h, [a, b, c], moved_from=[(c, datetime(2026, 4, 1, tzinfo=UTC))])


async def test_months_stay_exact_for_concurrent_writers_of_a_run(harness: Harness) -> None:
    h = harness
    ws = f"span-{new_id()[:8]}"
    run = f"{ws}-run"
    # Two open transactions write rows of one new run, in the same month and in another:
    # neither waits for the other (the second finishes while the first is still open),
    # and once both commit every month is there.
    async with h.engine.connect() as one, h.engine.connect() as two:
        await one.begin()
        await two.begin()
        await one.execute(insert(run_events), [event(run, MAY, ws)])
        await asyncio.wait_for(
            two.execute(
                insert(run_events),
                [event(run, MAY, ws), event(run, MAY - timedelta(days=70), ws)],
            ),
            timeout=10,
        )
        await two.commit()
        await one.commit()
    await months_match(h, [run])

    # Many writers at once, each a transaction of rows of several runs in random months
    # (each adds some months and finds others there): exact, and none waits or deadlocks.
    rnd = random.Random(11)
    many = [f"{ws}-many-{i}" for i in range(5)]

    async def writer(seed: int) -> None:
        rows = [
            event(rnd.choice(many), MAY + timedelta(days=rnd.randrange(-400, 400)), ws)
            for _ in range(30)
        ]
        async with h.engine.begin() as conn:
            await conn.execute(insert(run_events), rows[:15])
            # One statement, as the tracker writes its calls (COPY): the rollup triggers
            # take their runs' locks in order within it.
            await conn.execute(insert(token_usage).values([call(e, 100 + seed) for e in rows[15:]]))
            await conn.execute(insert(run_events), rows[15:])

    await asyncio.gather(*(writer(i) for i in range(8)))
    await months_match(h, many)


async def test_timeline_and_run_list_read_within_months_equal_the_unbounded_reads(
    harness: Harness,
) -> None:
    h = harness
    ws = f"span-{new_id()[:8]}"
    rnd = random.Random(3)
    ids = [f"{ws}-run-{i}" for i in range(4)]
    for i, run_id in enumerate(ids[:3]):  # the last run has events but no row yet
        await h.execute(
            insert(runs),
            [{"run_id": run_id, "workspace": ws, "task_id": f"t-{i}", "started_at": MAY}],
        )
    for run_id in ids:
        # months apart, written newest first: late rows land before the span they widen
        for back in (0, 35, 300):
            rows = [
                event(run_id, MAY - timedelta(days=back, minutes=rnd.randrange(600)), ws, kind)
                for kind in ("note", "worker_call", "worker_call")
            ]
            await h.execute(insert(run_events), rows)
            await h.execute(
                insert(token_usage),
                [call(e, rnd.randrange(1, 5000)) for e in rows if e["kind"] == "worker_call"],
            )
    repo = ReportRepo(h.engine)
    for run_id in ids:
        unbounded = await h.rows(
            select(run_events.c.kind, run_events.c.at, token_usage.c.input_tokens)
            .join(
                token_usage,
                (token_usage.c.event_id == run_events.c.event_id)
                & (token_usage.c.run_id == run_events.c.run_id),
                isouter=True,
            )
            .where(run_events.c.run_id == run_id)
            .order_by(run_events.c.at)
        )
        timeline = await repo.timeline(run_id)
        assert [
            (e["kind"], e["at"], e["data"].get("usage", {}).get("input_tokens")) for e in timeline
        ] == [tuple(r) for r in unbounded]
        assert len(timeline) == 9
    assert await repo.timeline(f"{ws}-unknown") == []
    assert await repo.run_workspace(ids[3]) == ws

    listed = await run_list(h.engine, RunListParams(workspace=ws), ws)
    u = token_usage.c
    raw = {
        r.run_id: r
        for r in await h.rows(
            select(
                u.run_id,
                func.count().label("calls"),
                func.sum(u.input_tokens).label("input_tokens"),
                func.sum(u.output_tokens).label("output_tokens"),
                func.coalesce(func.sum(u.cost_micros), 0).label("cost_micros"),
                func.count().filter(u.cost_known.is_(False)).label("unpriced_calls"),
            )
            .where(u.workspace == ws)
            .group_by(u.run_id)
        )
    }
    assert [r.run_id for r in listed.runs] and len(listed.runs) == 3
    for row in listed.runs:
        want = raw[row.run_id]
        got = (row.calls, row.input_tokens, row.output_tokens, row.cost_micros)
        assert got == (want.calls, want.input_tokens, want.output_tokens, want.cost_micros)
        assert row.unpriced_calls == want.unpriced_calls
