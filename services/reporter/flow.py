"""``GET /lanes``: lane cycle times, work in progress and an ETA for every open task.

The tracker keeps every ``task.status_changed`` in ``task_status_events``; the lanes follow
the status (work: ``in_progress``, review: ``ready_to_review``, QA: ``ready_to_qa``, plus
``blocked``), and the maths lives in :mod:`services.reporter.lanes`. A lane's statistics
are over the tasks that left it inside the window; its WIP are the tasks whose latest
transition (the one the tracker copies into ``tasks.status``) put them in it. Tasks still
open are read with their whole history, however old, so the time they already spent in
their lane counts towards their ETA.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.lanes import (
    BLOCKED,
    LANE_OF_STATUS,
    LANES,
    StatusEvent,
    finished_lane_hours,
    lane_etas,
    lane_stats,
    work_in_progress,
)
from services.reporter.params import Params, Since, Workspace, window_start
from tally.db.tables import task_status_events, tasks

#: Statuses of a task that is not done: in a lane, or blocked.
OPEN_STATUSES = (*LANE_OF_STATUS, BLOCKED)


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def lanes_view(
    events: Sequence[StatusEvent],
    titles: Mapping[str, str | None],
    since: datetime,
    now: datetime,
) -> dict[str, Any]:
    """The ``/lanes`` report from status events (the window's and the open tasks' history).

    ETAs come first by when they are due; tasks without one (nobody has finished their
    lane yet) come last.
    """
    finished = finished_lane_hours(events, since)
    wip = work_in_progress(events, now)
    lanes = {}
    for lane in (*LANES, BLOCKED):
        stats = lane_stats(finished[lane])
        lanes[lane] = {
            "count": stats.count,
            "mean_hours": _hours(stats.mean_hours),
            "p50_hours": _hours(stats.p50_hours),
            "p85_hours": _hours(stats.p85_hours),
            "total_hours": _hours(stats.total_hours),
            "wip": len(wip[lane]),
            "wip_hours": _hours(float(sum(wip[lane].values()))),
        }
    etas = sorted(
        lane_etas(events, now, since=since).values(),
        key=lambda e: (e.eta_at is None, e.eta_at or now, e.task_id),
    )
    return {
        "since": since.isoformat(),
        "now": now.isoformat(),
        "lanes": lanes,
        "etas": [
            {
                **{k: _hours(v) if isinstance(v, float) else v for k, v in asdict(e).items()},
                "title": titles.get(e.task_id),
                "eta_at": None if e.eta_at is None else e.eta_at.isoformat(),
            }
            for e in etas
        ],
    }


async def flow_events(
    engine: AsyncEngine, since: datetime, workspace: str | None
) -> tuple[list[StatusEvent], dict[str, str | None]]:
    """Status events of the tasks that moved since ``since`` or are still open, and titles.

    A task is open when its status, which the tracker keeps at its latest transition
    (latest ``changed_at``, then ``event_id``), is a lane or ``blocked``; both sets are
    found through indexes. A task the tracker holds no row for (its ``task.created`` never
    came) is seen through its moves inside the window only. Events come oldest first.
    """
    ev = task_status_events
    scope = [ev.c.workspace == workspace] if workspace else []
    open_scope = [tasks.c.workspace == workspace] if workspace else []
    relevant = union(
        select(ev.c.task_id).where(ev.c.changed_at >= since, *scope),
        select(tasks.c.task_id).where(tasks.c.status.in_(OPEN_STATUSES), *open_scope),
    )
    query = (
        select(ev.c.task_id, ev.c.from_status, ev.c.to_status, ev.c.changed_at, tasks.c.title)
        .select_from(ev.outerjoin(tasks, tasks.c.task_id == ev.c.task_id))
        .where(ev.c.task_id.in_(relevant), *scope)
        .order_by(ev.c.changed_at, ev.c.event_id)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    events = [StatusEvent(r.task_id, r.from_status, r.to_status, r.changed_at) for r in rows]
    return events, {r.task_id: r.title for r in rows}


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


def lanes_router(engine: AsyncEngine) -> APIRouter:
    """The ``/lanes`` route: ``?since=30d`` (window start) and ``?workspace=W``."""
    router = APIRouter(tags=["tasks"])

    @router.get("/lanes", response_model=LanesReport)
    async def show(
        q: Annotated[LanesParams, Query()],
        who: ReportsRead,
    ) -> dict[str, Any]:
        """Cycle time per lane (work, review, QA, blocked), WIP, and an ETA per open task."""
        now = datetime.now(UTC)
        since = window_start("since", q.since, now, future_ok=False)
        workspace = who.workspace_for(q.workspace)
        events, titles = await flow_events(engine, since, workspace)
        return {"workspace": workspace, **lanes_view(events, titles, since, now)}

    return router
