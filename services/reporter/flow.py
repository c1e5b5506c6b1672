"""``GET /lanes``: lane cycle times, work in progress and an ETA for every open task.

The tracker keeps every ``task.status_changed`` in ``task_status_events``; the lanes follow
the status (work: ``in_progress``, review: ``ready_to_review``, QA: ``ready_to_qa``, plus
``blocked``), and the rules live in :mod:`services.reporter.lanes`. A lane's statistics
are over the tasks that left it inside the window; its WIP are the tasks whose latest
transition (the one the tracker copies into ``tasks.status``) put them in it. Tasks still
open count their whole history, however old, towards the time spent in their lane.

Triggers on ``task_status_events`` keep those rules' results per task as moves are stored
(migration ``0017_lane_times``): ``task_lane_times`` (the lanes each task has left, with
its hours there and when it left), ``task_lane_exits`` (every move out of a lane),
``task_lanes`` (each task's latest status, lane, entry into it and closed hours per
lane) and ``task_lane_days`` (per day and lane: the moves out, the sorted hours of the
tasks that left). A window reads its whole days from the last and its first, partial day
from the rows per task; nothing is recomputed from the moves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import String, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.lanes import (
    BLOCKED,
    LANES,
    LaneHistory,
    OpenTask,
    TaskEta,
    etas_of,
    lane_stats,
    open_work,
)
from services.reporter.memo import Recent
from services.reporter.params import Params, Since, Workspace, window_start
from tally.db.tables import OPEN_STATUSES

#: ETAs in one answer unless ``limit`` says otherwise (the soonest first).
ETAS_PAGE = 100
ETAS_MAX_PAGE = 1000


def _hours(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _window_sql(scoped: bool) -> str:
    """One statement reading a window's lanes, each part through an index: per lane and
    ``blocked`` the hours of the tasks that left it since ``:since``, per lane the moves
    out of it since then (whole days from ``task_lane_days``, the partial first day from
    the rows per task), and when the tasks that moved since then first moved, when that
    is after ``:since`` (else ``:since`` itself: what the throughput is measured over)."""
    scope = "AND workspace = :workspace" if scoped else ""
    # the first whole day after :since (an expression of the parameter, so the day
    # indexes bound the scans)
    whole = (
        "(date_bin('1 day', CAST(:since AS timestamptz), TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        " + interval '1 day')"
    )
    return f"""
SELECT 'day' AS part, bucket AS name, hours, exits AS n, NULL::timestamptz AS at
FROM task_lane_days WHERE day >= {whole} {scope}
UNION ALL
SELECT 'finished', bucket, array_agg(hours), NULL, NULL FROM task_lane_times
WHERE left_at >= :since AND left_at < {whole} {scope} GROUP BY bucket
UNION ALL
SELECT 'exits', lane, NULL, count(*), NULL FROM task_lane_exits
WHERE at >= :since AND at < {whole} {scope} GROUP BY lane
UNION ALL
SELECT 'first', NULL, NULL, NULL, CASE
    -- (a probe in the order of the last_at index: it stops at the first such task)
    WHEN (SELECT true FROM task_lanes WHERE last_at >= :since AND first_at < :since {scope}
          ORDER BY last_at LIMIT 1)
    THEN CAST(:since AS timestamptz)
    -- no task moved both before and since: those that moved since all started since
    ELSE (SELECT min(first_at) FROM task_lanes WHERE first_at >= :since {scope}) END
"""


def _open_sql(scoped: bool) -> str:
    """The tasks whose latest move put them in a lane or ``blocked``."""
    scope = "AND l.workspace = :workspace" if scoped else ""
    statuses = ", ".join(f"'{s}'" for s in OPEN_STATUSES)
    return f"""
SELECT l.task_id, l.last_status, l.last_at, l.first_at, l.lane, l.blocked, l.entered_at,
       l.work_hours, l.review_hours, l.qa_hours, l.blocked_hours
FROM task_lanes l
WHERE l.last_status IN ({statuses}) {scope}
"""


WINDOW = {scoped: text(_window_sql(scoped)) for scoped in (False, True)}
TITLES = text("SELECT task_id, title FROM tasks WHERE task_id = ANY(:ids)").bindparams(
    bindparam("ids", type_=ARRAY(String))
)
OPEN = {scoped: text(_open_sql(scoped)) for scoped in (False, True)}


@dataclass
class Flow:
    """What ``/lanes`` is computed from: the lanes measured over the window, and the tasks
    still open."""

    finished: dict[str, list[float]]
    exits: dict[str, int]
    first_seen: datetime | None  #: the first move of the tasks that moved or are open,
    #: or the window's start when one of them moved before it
    open_tasks: list[OpenTask]


async def read_flow(engine: AsyncEngine, since: datetime, workspace: str | None) -> Flow:
    """The lanes measured since ``since`` and the open tasks, in two queries.

    A task is open when its latest transition (latest ``changed_at``, then ``event_id``)
    is to a lane or ``blocked``, however long ago it moved.
    """
    params: dict[str, Any] = {"since": since}
    if workspace:
        params["workspace"] = workspace
    async with engine.connect() as conn:
        # Small index reads: on two cores, starting parallel workers costs more than they
        # save (the open tasks at 10M run events: 2.5 ms alone, 50 ms with two workers).
        await conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        rows = (await conn.execute(WINDOW[bool(workspace)], params)).all()
        open_rows = (await conn.execute(OPEN[bool(workspace)], params)).all()
    finished: dict[str, list[float]] = {bucket: [] for bucket in (*LANES, BLOCKED)}
    exits = dict.fromkeys(LANES, 0)
    first_seen: datetime | None = None
    for part, name, hours, n, at in rows:
        if part in ("day", "finished"):
            finished[name] += hours
        if part in ("day", "exits") and n:
            exits[name] += int(n)
        elif part == "first":
            first_seen = at
    for samples in finished.values():
        samples.sort()  # sorted runs, a day each: merged in linear time
    open_tasks = [
        OpenTask(
            task_id=r.task_id,
            status=r.last_status,
            moved_at=r.last_at,
            lane=r.lane,
            blocked=r.blocked,
            entered=r.entered_at,
            closed_hours={
                "work": r.work_hours,
                "review": r.review_hours,
                "qa": r.qa_hours,
                BLOCKED: r.blocked_hours,
            },
        )
        for r in open_rows
    ]
    firsts = [r.first_at for r in open_rows]
    if first_seen is not None:
        firsts.append(first_seen)
    return Flow(finished, exits, min(firsts, default=None), open_tasks)


def _eta_row(e: TaskEta, title: str | None) -> dict[str, Any]:
    return {
        "task_id": e.task_id,
        "title": title,
        "lane": e.lane,
        "blocked": e.blocked,
        "spent_hours": _hours(e.spent_hours),
        "wip_ahead": e.wip_ahead,
        "queue_hours": _hours(e.queue_hours),
        "remaining_in_lane_hours": _hours(e.remaining_in_lane_hours),
        "downstream_hours": _hours(e.downstream_hours),
        "eta_hours": _hours(e.eta_hours),
        "eta_at": None if e.eta_at is None else e.eta_at.isoformat(),
        "overdue": e.overdue,
    }


class Ranked:
    """A ``/lanes`` answer computed once: the lanes, and every open task's ETA ranked by
    when it is due (tasks without one, as nobody has finished their lane yet, last).
    Pages of it are formatted as asked (:meth:`page`)."""

    def __init__(self, flow: Flow, since: datetime, now: datetime) -> None:
        wip = open_work(flow.open_tasks, now)
        self.since, self.now = since, now
        #: titles of the tasks shown so far (looked up a page at a time: :func:`add_titles`)
        self.titles: dict[str, str | None] = {}
        self.lanes = {}
        for lane in (*LANES, BLOCKED):
            stats = lane_stats(flow.finished[lane])
            self.lanes[lane] = {
                "count": stats.count,
                "mean_hours": _hours(stats.mean_hours),
                "p50_hours": _hours(stats.p50_hours),
                "p85_hours": _hours(stats.p85_hours),
                "total_hours": _hours(stats.total_hours),
                "wip": len(wip[lane]),
                "wip_hours": _hours(float(sum(wip[lane].values()))),
            }
        first_seen = flow.first_seen or now
        measured = LaneHistory(
            {lane: flow.finished[lane] for lane in LANES},
            flow.exits,
            max((now - max(first_seen, since)).total_seconds() / 3600.0, 1e-9),
        )
        places = (p for t in flow.open_tasks if (p := t.place(now)) is not None)
        self.etas = sorted(
            etas_of(places, now, measured).values(),
            key=lambda e: (e.eta_at is None, e.eta_at or now, e.task_id),
        )

    def etas_page(self, limit: int | None = None, offset: int = 0) -> list[TaskEta]:
        return self.etas[offset:] if limit is None else self.etas[offset : offset + limit]

    def page(self, limit: int | None = None, offset: int = 0) -> dict[str, Any]:
        """The report with ``limit`` ETAs from ``offset`` on (all without ``limit``);
        ``etas_total`` counts them all."""
        etas = self.etas_page(limit, offset)
        return {
            "since": self.since.isoformat(),
            "now": self.now.isoformat(),
            "lanes": self.lanes,
            "etas_total": len(self.etas),
            "etas": [_eta_row(e, self.titles.get(e.task_id)) for e in etas],
        }


async def add_titles(engine: AsyncEngine, ranked: Ranked, limit: int, offset: int) -> None:
    """Look up the titles of the page's tasks not looked up yet (one query; a page of
    tasks, not every open one)."""
    missing = [e.task_id for e in ranked.etas_page(limit, offset) if e.task_id not in ranked.titles]
    if not missing:
        return
    async with engine.connect() as conn:
        found = await conn.execute(TITLES, {"ids": missing})
        titles = dict.fromkeys(missing, None) | {r.task_id: r.title for r in found}
    ranked.titles.update(titles)


def lanes_view(
    flow: Flow, since: datetime, now: datetime, limit: int | None = None, offset: int = 0
) -> dict[str, Any]:
    """The ``/lanes`` report (see :class:`Ranked`): the lanes, and ``limit`` ETAs from
    ``offset`` on, soonest first (all without ``limit``)."""
    return Ranked(flow, since, now).page(limit, offset)


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
    etas_total: int = Field(description="Open tasks in a lane: ETAs over every page.")
    etas: list[Eta] = Field(description="``limit`` ETAs from ``offset`` on, soonest first.")


class LanesParams(Params):
    since: Since = "30d"
    workspace: Workspace | None = None
    limit: int = Field(ETAS_PAGE, ge=1, le=ETAS_MAX_PAGE, description="ETAs in this answer.")
    offset: int = Field(0, ge=0, description="ETAs to skip (the soonest first).")


def lanes_router(engine: AsyncEngine, fresh_for_s: float = 0.0) -> APIRouter:
    """The ``/lanes`` route: ``?since=30d`` (window start), ``?workspace=W`` and the page
    of ETAs (``?limit=100&offset=0``).

    The same question asked again within ``fresh_for_s`` seconds gets the same answer
    (its ``now`` says when it was computed; any page of it), and questions asked at once
    share one.
    """
    router = APIRouter(tags=["tasks"])
    recent: Recent[Ranked] = Recent(fresh_for_s)

    @router.get("/lanes", response_model=LanesReport)
    async def show(
        q: Annotated[LanesParams, Query()],
        who: ReportsRead,
    ) -> dict[str, Any]:
        """Cycle time per lane (work, review, QA, blocked), WIP, and an ETA per open task."""
        window_start("since", q.since, datetime.now(UTC), future_ok=False)  # 400 if bad
        workspace = who.workspace_for(q.workspace)

        async def compute() -> Ranked:
            now = datetime.now(UTC)
            since = window_start("since", q.since, now, future_ok=False)
            return Ranked(await read_flow(engine, since, workspace), since, now)

        ranked = await recent.get((workspace, q.since), compute)
        await add_titles(engine, ranked, q.limit, q.offset)
        return {"workspace": workspace, **ranked.page(q.limit, q.offset)}

    return router
