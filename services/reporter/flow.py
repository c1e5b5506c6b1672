"""``GET /lanes``: lane cycle times, work in progress and an ETA for every open task.

The tracker keeps every ``task.status_changed`` in ``task_status_events``; the lanes follow
the status (work: ``in_progress``, review: ``ready_to_review``, QA: ``ready_to_qa``, plus
``blocked``), and the rules live in :mod:`services.reporter.lanes`. A lane's statistics
are over the tasks that left it inside the window; its WIP are the tasks whose latest
transition (the one the tracker copies into ``tasks.status``) put them in it. Tasks still
open are read with their whole history, however old, so the time they already spent in
their lane counts towards their ETA.

The window's finished durations, exits and first move are measured in SQL (one
statement, :func:`_history_sql`, the same rules as the Python ones, which a test checks);
only the open tasks' moves come to Python, for WIP and ETAs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import String, any_, bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.lanes import (
    BLOCKED,
    LANE_OF_STATUS,
    LANES,
    LaneHistory,
    StatusEvent,
    etas_in_flight,
    lane_stats,
    work_in_progress,
)
from services.reporter.memo import Recent
from services.reporter.params import Params, Since, Workspace, window_start
from tally.db.tables import task_status_events, tasks

#: Statuses of a task that is not done: in a lane, or blocked.
OPEN_STATUSES = (*LANE_OF_STATUS, BLOCKED)


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _lane_of(column: str) -> str:
    """SQL: the lane of a status column (NULL for backlog, completed and blocked)."""
    whens = " ".join(f"WHEN '{status}' THEN '{lane}'" for status, lane in LANE_OF_STATUS.items())
    return f"(CASE {column} {whens} END)"


def _history_sql(scoped: bool) -> str:
    """One statement measuring the lanes over the tasks that moved since ``:since``.

    Rows: ``finished`` (per lane and ``blocked``: each task's finished hours, sorted, of
    the tasks that left it since then), ``exits`` (per lane: moves out of it since then),
    ``first`` (the first move of these tasks) and ``open`` (those whose latest move put
    them in a lane or ``blocked``, and the tasks whose status, kept by the tracker at
    their latest move, says so). The same rules as :mod:`services.reporter.lanes`
    (a task's current lane and its block inside it are not finished; leaving a lane
    through a block counts as an exit when the task moves on to another lane).
    """
    scope = "AND workspace = :workspace" if scoped else ""
    blocked = f"CASE WHEN to_status = '{BLOCKED}' THEN '{BLOCKED}' END"
    bucket = f"COALESCE({_lane_of('to_status')}, {blocked})"
    open_statuses = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
    return f"""
WITH moved AS (
    SELECT DISTINCT task_id FROM task_status_events WHERE changed_at >= :since {scope}
), s AS (
    -- each moved task's whole history, through the (task_id, changed_at) index: the cost
    -- follows the window's tasks, not the table's years of moves (OFFSET 0 keeps the
    -- planner from turning this into a hash join over the whole table)
    SELECT e.task_id, to_status, changed_at, event_id, {bucket} AS bucket,
           lead(changed_at) OVER (PARTITION BY e.task_id ORDER BY changed_at, event_id) AS ended
    FROM moved CROSS JOIN LATERAL (
        SELECT * FROM task_status_events WHERE task_id = moved.task_id {scope} OFFSET 0
    ) e
), latest AS (
    SELECT task_id, min(changed_at) AS first_at,
           (array_agg(to_status ORDER BY changed_at DESC, event_id DESC))[1] AS last_status,
           (array_agg(to_status ORDER BY changed_at DESC, event_id DESC)
               FILTER (WHERE to_status <> '{BLOCKED}'))[1] AS last_unblocked
    FROM s GROUP BY task_id
), cur AS (
    SELECT task_id, first_at, last_status, last_status = '{BLOCKED}' AS blocked,
           CASE WHEN last_status = '{BLOCKED}' THEN {_lane_of("last_unblocked")}
                ELSE {_lane_of("last_status")} END AS lane
    FROM latest
), finished AS (
    SELECT task_id, bucket, max(ended) AS left_at,
           sum(extract(epoch FROM ended - changed_at))::float8 / 3600 AS hours
    FROM s WHERE ended IS NOT NULL AND bucket IS NOT NULL GROUP BY task_id, bucket
), exits AS (
    SELECT lag({_lane_of("to_status")}) OVER (PARTITION BY task_id ORDER BY changed_at, event_id)
               AS previous, {_lane_of("to_status")} AS lane, changed_at
    FROM s WHERE to_status <> '{BLOCKED}'
)
SELECT 'finished' AS part, f.bucket AS name, array_agg(f.hours ORDER BY f.hours) AS hours,
       NULL::bigint AS n, NULL::timestamptz AS at
FROM finished f JOIN cur c USING (task_id)
WHERE f.left_at >= :since AND f.bucket IS DISTINCT FROM c.lane
      AND NOT (f.bucket = '{BLOCKED}' AND c.blocked)
GROUP BY f.bucket
UNION ALL
SELECT 'exits', previous, NULL, count(*), NULL FROM exits
WHERE previous IS NOT NULL AND lane IS DISTINCT FROM previous AND changed_at >= :since
GROUP BY previous
UNION ALL
SELECT 'first', NULL, NULL, NULL, min(first_at) FROM cur
UNION ALL
SELECT 'open', task_id, NULL, NULL, NULL FROM cur WHERE last_status IN ({open_statuses})
UNION ALL
SELECT 'open', task_id, NULL, NULL, NULL FROM tasks WHERE status IN ({open_statuses}) {scope}
"""


HISTORY = {scoped: text(_history_sql(scoped)) for scoped in (False, True)}


@dataclass
class Flow:
    """What ``/lanes`` is computed from: the lanes measured in SQL over the window, and the
    whole history of the tasks still open, with their titles."""

    finished: dict[str, list[float]]
    exits: dict[str, int]
    first_seen: datetime | None
    open_events: list[StatusEvent]
    titles: dict[str, str | None]


async def read_flow(engine: AsyncEngine, since: datetime, workspace: str | None) -> Flow:
    """The lanes measured since ``since`` and the open tasks' events, in two queries.

    A task is open when its latest transition (latest ``changed_at``, then ``event_id``)
    is to a lane or ``blocked``: the tracker keeps that status in ``tasks.status``, and a
    task that moved inside the window is judged from its moves (even without a row in
    ``tasks``). Events come oldest first.
    """
    params: dict[str, Any] = {"since": since}
    if workspace:
        params["workspace"] = workspace
    ev = task_status_events
    async with engine.connect() as conn:
        rows = (await conn.execute(HISTORY[bool(workspace)], params)).all()
        finished: dict[str, list[float]] = {bucket: [] for bucket in (*LANES, BLOCKED)}
        exits = dict.fromkeys(LANES, 0)
        first_seen: datetime | None = None
        open_ids: list[str] = []
        for part, name, hours, n, at in rows:
            if part == "finished":
                finished[name] = [float(h) for h in hours]
            elif part == "exits":
                exits[name] = int(n)
            elif part == "first":
                first_seen = at
            else:
                open_ids.append(name)
        scope = [ev.c.workspace == workspace] if workspace else []
        query = (
            select(ev.c.task_id, ev.c.from_status, ev.c.to_status, ev.c.changed_at, tasks.c.title)
            .select_from(ev.outerjoin(tasks, tasks.c.task_id == ev.c.task_id))
            # One array parameter, however many tasks are open (a statement has at most
            # 32,767 parameters).
            .where(
                ev.c.task_id == any_(bindparam("open_ids", sorted(set(open_ids)), ARRAY(String))),
                *scope,
            )
            .order_by(ev.c.changed_at, ev.c.event_id)
        )
        open_rows = (await conn.execute(query)).all()
    events = [StatusEvent(r.task_id, r.from_status, r.to_status, r.changed_at) for r in open_rows]
    return Flow(finished, exits, first_seen, events, {r.task_id: r.title for r in open_rows})


def lanes_view(flow: Flow, since: datetime, now: datetime) -> dict[str, Any]:
    """The ``/lanes`` report. ETAs come first by when they are due; tasks without one
    (nobody has finished their lane yet) come last."""
    wip = work_in_progress(flow.open_events, now)
    lanes = {}
    for lane in (*LANES, BLOCKED):
        stats = lane_stats(flow.finished[lane])
        lanes[lane] = {
            "count": stats.count,
            "mean_hours": _hours(stats.mean_hours),
            "p50_hours": _hours(stats.p50_hours),
            "p85_hours": _hours(stats.p85_hours),
            "total_hours": _hours(stats.total_hours),
            "wip": len(wip[lane]),
            "wip_hours": _hours(float(sum(wip[lane].values()))),
        }
    starts = [e.at for e in flow.open_events[:1]]
    first_seen = min([*starts, *([flow.first_seen] if flow.first_seen else [])], default=now)
    measured = LaneHistory(
        {lane: flow.finished[lane] for lane in LANES},
        flow.exits,
        max((now - max(first_seen, since)).total_seconds() / 3600.0, 1e-9),
    )
    etas = sorted(
        etas_in_flight(flow.open_events, now, measured).values(),
        key=lambda e: (e.eta_at is None, e.eta_at or now, e.task_id),
    )
    return {
        "since": since.isoformat(),
        "now": now.isoformat(),
        "lanes": lanes,
        "etas": [
            {
                **{k: _hours(v) if isinstance(v, float) else v for k, v in asdict(e).items()},
                "title": flow.titles.get(e.task_id),
                "eta_at": None if e.eta_at is None else e.eta_at.isoformat(),
            }
            for e in etas
        ],
    }


class LaneRow(BaseModel):
    """A lane's cycle times (hours) over the tasks that left it, and its WIP now."""

    count: int
    mean_hours: float | None
    p50_hours: float | None
    p85_hours: float | None
    total_hours: float | None
    wip: int
    wip_hours: float | None


class Eta(BaseModel):
    """When an open task should reach ``completed``, and why."""

    task_id: str
    title: str | None
    lane: str
    blocked: bool
    spent_hours: float | None
    wip_ahead: int
    queue_hours: float | None
    remaining_in_lane_hours: float | None
    downstream_hours: float | None
    eta_hours: float | None
    eta_at: datetime | None
    overdue: bool


class LanesReport(BaseModel):
    workspace: str | None
    since: datetime
    now: datetime
    lanes: dict[str, LaneRow]
    etas: list[Eta]


class LanesParams(Params):
    since: Since = "30d"
    workspace: Workspace | None = None


def lanes_router(engine: AsyncEngine, fresh_for_s: float = 0.0) -> APIRouter:
    """The ``/lanes`` route: ``?since=30d`` (window start) and ``?workspace=W``.

    The same question asked again within ``fresh_for_s`` seconds gets the same answer
    (its ``now`` says when it was computed), and questions asked at once share one.
    """
    router = APIRouter(tags=["tasks"])
    recent: Recent[dict[str, Any]] = Recent(fresh_for_s)

    @router.get("/lanes", response_model=LanesReport)
    async def show(
        q: Annotated[LanesParams, Query()],
        who: ReportsRead,
    ) -> dict[str, Any]:
        """Cycle time per lane (work, review, QA, blocked), WIP, and an ETA per open task."""
        window_start("since", q.since, datetime.now(UTC), future_ok=False)  # 400 if bad
        workspace = who.workspace_for(q.workspace)

        async def compute() -> dict[str, Any]:
            now = datetime.now(UTC)
            since = window_start("since", q.since, now, future_ok=False)
            flow = await read_flow(engine, since, workspace)
            return {"workspace": workspace, **lanes_view(flow, since, now)}

        return await recent.get((workspace, q.since), compute)

    return router
