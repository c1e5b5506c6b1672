"""``GET /models/performance``, ``GET /dashboard/stats`` and ``GET /experiments``.

Read from the tables their owners write: the learner's ``model_scores``, the tracker's
tasks, runs and token use, the assigner's assignments, deferrals and experiments.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, computed_field
from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.params import Params, Since, Workspace, window_start
from services.reporter.usage import attributed_since
from tally.db.tables import (
    assigner_tasks,
    assignments,
    experiments,
    model_scores,
    runs,
    tasks,
)
from tally.moneyview import Micros, UsdText, micros, usd_string


class Spread(BaseModel):
    """Running statistics of one measure."""

    count: int
    mean: float | None
    stddev: float | None
    min: float | None
    max: float | None


def spread(stats: dict[str, Any] | None) -> Spread:
    s = stats or {}
    count = int(s.get("count", 0))
    m2 = float(s.get("m2", 0.0))
    return Spread(
        count=count,
        mean=float(s.get("mean", 0.0)) if count else None,
        stddev=math.sqrt(m2 / (count - 1)) if count > 1 else None,
        min=s.get("min"),
        max=s.get("max"),
    )


class ModelPerformance(BaseModel):
    """What the learner measured for one model on one task type and complexity band."""

    workspace: str
    model: str
    task_type: str
    band: str
    runs: int
    successes: int
    success_rate: float | None
    velocity: Spread  #: story points per hour, successful runs only
    quality: Spread
    delivered_points: float
    total_tokens: int
    total_hours: float
    cost_micros: Micros
    cost_per_point_micros: Micros | None
    updated_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> UsdText:
        return usd_string(self.cost_micros)


class ModelsReport(BaseModel):
    models: list[ModelPerformance]


class ModelParams(Params):
    workspace: Workspace | None = None
    model: Workspace | None = None


def performance(row: Any) -> ModelPerformance:
    s: dict[str, Any] = row.stats
    runs_n, points = int(s.get("runs", 0)), float(s.get("delivered_points", 0.0))
    # Scores saved before money was counted in micro-dollars hold dollars.
    cost = (
        int(s["total_cost_micros"])
        if "total_cost_micros" in s
        else micros(s.get("total_cost_usd", 0.0))
    )
    return ModelPerformance(
        workspace=row.workspace,
        model=row.model,
        task_type=row.task_type,
        band=row.band,
        runs=runs_n,
        successes=int(s.get("successes", 0)),
        success_rate=int(s.get("successes", 0)) / runs_n if runs_n else None,
        velocity=spread(s.get("velocity")),
        quality=spread(s.get("quality")),
        delivered_points=points,
        total_tokens=int(s.get("total_tokens", 0)),
        total_hours=float(s.get("total_hours", 0.0)),
        cost_micros=cost,
        cost_per_point_micros=round(cost / points) if points else None,
        updated_at=row.updated_at,
    )


class DashboardStats(BaseModel):
    """Work and spend over a window (``since`` to ``now``)."""

    workspace: str | None
    since: datetime
    now: datetime
    tasks_created: int
    tasks_assigned: int
    tasks_deferred: int = 0  #: deferred now, last touched inside the window
    tasks_finished: int  #: completed inside the window
    runs_finished: int
    runs_succeeded: int
    success_rate: float | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    spend_micros: Micros

    @computed_field  # type: ignore[prop-decorator]
    @property
    def spend_usd(self) -> UsdText:
        return usd_string(self.spend_micros)


class WindowParams(Params):
    since: Since = "7d"
    workspace: Workspace | None = None


class Variant(BaseModel):
    name: str
    strategy: str
    weight: float


class ExperimentRow(BaseModel):
    name: str
    task_type: str | None
    active: bool
    variants: list[Variant]
    created_at: datetime


class ExperimentsReport(BaseModel):
    experiments: list[ExperimentRow]


class ExperimentParams(Params):
    active: bool | None = None


async def dashboard(
    engine: AsyncEngine, since: datetime, now: datetime, workspace: str | None, namespace: str
) -> DashboardStats:
    def scoped(column: ColumnElement[Any], *more: ColumnElement[bool]) -> ColumnElement[bool]:
        return and_(*more, column == workspace) if workspace else and_(*more)

    # Whole days from the daily rollup: a few rows a day rather than one per run and hour.
    usage = attributed_since(since, workspace)
    tokens = [
        func.coalesce(func.sum(usage.c[k]), 0)
        for k in (
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_micros",
        )
    ]
    async with engine.connect() as conn:
        created = await conn.scalar(
            select(func.count()).where(scoped(tasks.c.workspace, tasks.c.created_at >= since))
        )
        finished = await conn.scalar(
            select(func.count()).where(scoped(tasks.c.workspace, tasks.c.completed_at >= since))
        )
        assigned = await conn.scalar(
            select(func.count(func.distinct(assignments.c.task_id))).where(
                scoped(assignments.c.workspace, assignments.c.created_at >= since)
            )
        )
        deferred = await conn.scalar(
            select(func.count()).where(
                scoped(
                    assigner_tasks.c.workspace,
                    assigner_tasks.c.namespace == namespace,
                    assigner_tasks.c.status == "deferred",
                    assigner_tasks.c.updated_at >= since,
                )
            )
        )
        done = (
            await conn.execute(
                select(func.count(), func.count().filter(runs.c.success.is_(True))).where(
                    scoped(runs.c.workspace, runs.c.finished_at >= since)
                )
            )
        ).one()
        used = (await conn.execute(select(*tokens))).one()
    return DashboardStats(
        workspace=workspace,
        since=since,
        now=now,
        tasks_created=created or 0,
        tasks_assigned=assigned or 0,
        tasks_deferred=deferred or 0,
        tasks_finished=finished or 0,
        runs_finished=done[0],
        runs_succeeded=done[1],
        success_rate=done[1] / done[0] if done[0] else None,
        input_tokens=int(used[0]),
        output_tokens=int(used[1]),
        cache_read_tokens=int(used[2]),
        cache_write_tokens=int(used[3]),
        reasoning_tokens=int(used[4]),
        spend_micros=int(used[5]),
    )


def insights_router(engine: AsyncEngine, namespace: str) -> APIRouter:
    router = APIRouter()

    @router.get("/models/performance", response_model=ModelsReport, tags=["learning"])
    async def models(q: Annotated[ModelParams, Query()], who: ReportsRead) -> ModelsReport:
        """Learned performance per model, task type and complexity band."""
        stmt = select(model_scores).order_by(
            model_scores.c.workspace,
            model_scores.c.model,
            model_scores.c.task_type,
            model_scores.c.band,
        )
        if workspace := who.workspace_for(q.workspace):
            stmt = stmt.where(model_scores.c.workspace == workspace)
        if q.model:
            stmt = stmt.where(model_scores.c.model == q.model)
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return ModelsReport(models=[performance(r) for r in rows])

    @router.get("/dashboard/stats", response_model=DashboardStats, tags=["dashboard"])
    async def stats(q: Annotated[WindowParams, Query()], who: ReportsRead) -> DashboardStats:
        """Tasks created, assigned, deferred and finished, success rate, spend and tokens."""
        now = datetime.now(UTC)
        since = window_start("since", q.since, now)
        return await dashboard(engine, since, now, who.workspace_for(q.workspace), namespace)

    @router.get("/experiments", response_model=ExperimentsReport, tags=["learning"])
    async def experiment_list(
        q: Annotated[ExperimentParams, Query()], who: ReportsRead
    ) -> ExperimentsReport:
        """The A/B experiments the assigner runs (``tally experiment create``).

        Experiments are installation-wide (they have no workspace): operator tokens only."""
        who.operator_only("the experiments list")
        stmt = (
            select(experiments)
            .where(experiments.c.namespace == namespace)
            .order_by(experiments.c.created_at, experiments.c.name)
        )
        if q.active is not None:
            stmt = stmt.where(experiments.c.active.is_(q.active))
        async with engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return ExperimentsReport(
            experiments=[
                ExperimentRow(
                    name=r.name,
                    task_type=r.task_type,
                    active=r.active,
                    variants=[Variant(**v) for v in r.variants],
                    created_at=r.created_at,
                )
                for r in rows
            ]
        )

    return router
