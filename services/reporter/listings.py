"""``GET /tasks`` and ``GET /runs``: the tables a person searches, newest first.

Tasks come from the tracker's ``tasks`` with where the assigner stands with each
(``assigner_tasks``) and how many runs it had; runs from the tracker's ``runs`` with their
token use and cost summed from ``token_usage_hourly``, the rollup every write to
``token_usage`` keeps (so a run still going shows what it spent so far). Both answer at
most ``limit`` rows and say whether there were more.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, computed_field
from sqlalchemy import ColumnElement, Select, and_, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import RunsRead
from services.reporter.lanes import LANE_OF_STATUS
from services.reporter.params import Id, Params, Since, Workspace, window_start
from tally.db.tables import assigner_tasks, runs, tasks, token_usage_hourly
from tally.moneyview import Micros, UsdText, usd_string

#: The lanes a task can be filtered by, and the statuses each holds.
LANE_STATUSES = {
    "backlog": ("backlog",),
    **{lane: (status,) for status, lane in LANE_OF_STATUS.items()},
    "blocked": ("blocked",),
    "done": ("completed",),
}
Lane = Literal["backlog", "work", "review", "qa", "blocked", "done"]
assert set(LANE_STATUSES) == set(Lane.__args__)  # type: ignore[attr-defined]


def lane_of(status: str | None) -> str | None:
    """The lane (``work``, ``review``, ``qa``, ``blocked``, ``backlog``, ``done``) of a status."""
    return next((lane for lane, held in LANE_STATUSES.items() if status in held), None)


class TaskRow(BaseModel):
    task_id: str
    workspace: str
    title: str
    priority: str
    labels: list[str]
    task_type: str | None
    status: str
    lane: str | None
    plan_id: str | None
    model: str | None
    story_points: float | None
    hours_p50: float | None
    value_score: float | None
    #: ``assigned``, ``deferred`` or ``exhausted`` (None: the assigner has not seen it)
    assigner_status: str | None
    #: why the assigner deferred or gave up on it, and when it tries again
    assigner_reason: str | None
    retry_after: datetime | None
    runs: int
    created_at: datetime
    completed_at: datetime | None


class TaskList(BaseModel):
    tasks: list[TaskRow]
    more: bool = Field(description="More tasks matched than ``limit``.")


class TaskListParams(Params):
    workspace: Workspace | None = None
    q: str | None = Field(
        None,
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="Words in the title or id.",
    )
    status: Id | None = None
    lane: Lane | None = None
    priority: Literal["P0", "P1", "P2", "P3", "P4"] | None = None
    model: Id | None = None
    label: Id | None = None
    plan_id: Id | None = None
    assigner: Literal["assigned", "deferred", "exhausted"] | None = None
    limit: int = Field(100, ge=1, le=500)


class RunRow(BaseModel):
    run_id: str
    task_id: str
    workspace: str
    model: str | None
    agent_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    success: bool | None
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_micros: Micros
    #: calls whose model had no known price (not in ``cost_micros``)
    unpriced_calls: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> UsdText:
        return usd_string(self.cost_micros)


class RunList(BaseModel):
    runs: list[RunRow]
    more: bool = Field(description="More runs matched than ``limit``.")


class RunListParams(Params):
    workspace: Workspace | None = None
    task_id: Id | None = None
    model: Id | None = None
    outcome: Id | None = None
    since: Since | None = None
    limit: int = Field(100, ge=1, le=500)


def _task_filters(q: TaskListParams, workspace: str | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if workspace:
        where.append(tasks.c.workspace == workspace)
    if q.q:
        for word in q.q.split():
            like = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            where.append(or_(tasks.c.title.ilike(like), tasks.c.task_id.ilike(like)))
    if q.status:
        where.append(tasks.c.status == q.status)
    if q.lane:
        where.append(tasks.c.status.in_(LANE_STATUSES[q.lane]))
    if q.priority:
        where.append(tasks.c.priority == q.priority)
    if q.model:
        where.append(tasks.c.model == q.model)
    if q.label:
        where.append(tasks.c.labels.contains([q.label]))
    if q.plan_id:
        where.append(tasks.c.plan_id == q.plan_id)
    if q.assigner:
        where.append(assigner_tasks.c.status == q.assigner)
    return where


def task_list_query(q: TaskListParams, workspace: str | None, namespace: str) -> Select[Any]:
    """The tasks of ``GET /tasks``: newest first (``ix_tasks_listed``, or per workspace
    ``ix_tasks_workspace_listed``), one more than ``limit``."""
    run_count = (
        select(func.count()).where(runs.c.task_id == tasks.c.task_id).scalar_subquery()
    ).label("run_count")
    joined = tasks.join(
        assigner_tasks,
        and_(assigner_tasks.c.task_id == tasks.c.task_id, assigner_tasks.c.namespace == namespace),
        isouter=True,
    )
    stmt = (
        select(
            tasks,
            assigner_tasks.c.status.label("assigner_status"),
            assigner_tasks.c.reason.label("assigner_reason"),
            assigner_tasks.c.retry_after,
            run_count,
        )
        .select_from(joined)
        .where(*_task_filters(q, workspace))
        .order_by(tasks.c.created_at.desc(), tasks.c.task_id)
        .limit(q.limit + 1)
    )
    return stmt


async def task_list(
    engine: AsyncEngine, q: TaskListParams, workspace: str | None, namespace: str
) -> TaskList:
    async with engine.connect() as conn:
        rows = (await conn.execute(task_list_query(q, workspace, namespace))).all()
    return TaskList(
        tasks=[
            TaskRow(
                **{k: getattr(r, k) for k in TaskRow.model_fields if k not in ("lane", "runs")},
                lane=lane_of(r.status),
                runs=r.run_count,
            )
            for r in rows[: q.limit]
        ],
        more=len(rows) > q.limit,
    )


def run_list_query(q: RunListParams, workspace: str | None) -> Select[Any]:
    """The runs of ``GET /runs``: newest first, one more than ``limit``.

    The page of runs is chosen first, in the order of ``ix_runs_listed`` (or, in one
    workspace, ``ix_runs_workspace_listed``); only then are each chosen run's calls summed,
    from the hourly rollup (``ix_token_usage_hourly_run_id``: a row or two per run, one
    table, where ``token_usage`` would be asked in each of its monthly partitions), so a
    listing reads a page's rows, never the whole table.
    """
    listed_at = func.coalesce(runs.c.started_at, runs.c.created_at)
    where: list[ColumnElement[bool]] = []
    if workspace:
        where.append(runs.c.workspace == workspace)
    if q.task_id:
        where.append(runs.c.task_id == q.task_id)
    if q.model:
        where.append(runs.c.model == q.model)
    if q.outcome:
        where.append(runs.c.outcome == q.outcome)
    if q.since:
        where.append(listed_at >= window_start("since", q.since, datetime.now(UTC)))
    page = (
        select(runs, listed_at.label("listed_at"))
        .where(*where)
        .order_by(listed_at.desc(), runs.c.run_id)
        .limit(q.limit + 1)
        .subquery("page")
    )
    u = token_usage_hourly.c
    summed = ("calls", "input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
    used = (
        select(
            *(func.sum(u[k]).label(k) for k in summed),
            func.coalesce(func.sum(u.cost_micros), 0).label("cost_micros"),
            func.sum(u.unpriced_calls).label("unpriced_calls"),
        )
        .where(u.run_id == page.c.run_id)
        .lateral("used")
    )
    return (
        select(page, used)
        .select_from(page.join(used, true()))
        .order_by(page.c.listed_at.desc(), page.c.run_id)
    )


async def run_list(engine: AsyncEngine, q: RunListParams, workspace: str | None) -> RunList:
    async with engine.connect() as conn:
        rows = (await conn.execute(run_list_query(q, workspace))).all()
    counted = ("calls", "unpriced_calls", "cost_micros")
    return RunList(
        runs=[
            RunRow(
                **{
                    k: (
                        int(getattr(r, k) or 0)
                        if k.endswith("tokens") or k in counted
                        else getattr(r, k)
                    )
                    for k in RunRow.model_fields
                }
            )
            for r in rows[: q.limit]
        ],
        more=len(rows) > q.limit,
    )


def listings_router(engine: AsyncEngine, namespace: str) -> APIRouter:
    router = APIRouter()

    @router.get("/tasks", response_model=TaskList, tags=["tasks"])
    async def tasks_index(q: Annotated[TaskListParams, Query()], who: RunsRead) -> TaskList:
        """Tasks, newest first, filtered by words (``q``), status, lane, priority, model,
        label, plan and where the assigner stands (``assigner=deferred``)."""
        return await task_list(engine, q, who.workspace_for(q.workspace), namespace)

    @router.get("/runs", response_model=RunList, tags=["runs"])
    async def runs_index(q: Annotated[RunListParams, Query()], who: RunsRead) -> RunList:
        """Runs, newest first, with their tokens by kind and cost so far."""
        return await run_list(engine, q, who.workspace_for(q.workspace))

    return router
