"""``GET /plans/{plan_id}``: a plan's tasks, Tally's estimates beside the team's, the
critical path by P50 hours, and a Monte Carlo forecast of the plan's completion.

Plans arrive as ``task.created`` events with ``plan_id``, ``dependencies`` and
``team_estimate`` (``tally plan import``); the tracker keeps them in ``tasks`` and the
estimator its estimates in ``estimates``, so the view is computed here, beside the data.
Each remaining task's hours are lognormal through its estimate's P50 and P90 (which come
from the workspace's measured velocity once it has enough finished runs); the forecast
assumes unlimited parallelism, so it is the earliest a team with enough hands could finish.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.errors import bad_parameter, not_found
from services.reporter.forecast import (
    DependencyError,
    LogNormal,
    critical_path,
    forecast_with_dependencies,
)
from services.reporter.params import Params, Workspace
from tally.db.tables import estimates, tasks

#: z-score of the 90th percentile of a normal distribution.
_Z90 = 1.2815515655446004


def hours_spread(p50: float, p90: float) -> LogNormal:
    """The lognormal whose median is ``p50`` and 90th percentile ``p90``."""
    p50 = max(p50, 1e-6)
    return LogNormal(math.log(p50), max(math.log(max(p90, p50) / p50), 0.0) / _Z90)


def plan_view(plan_id: str, rows: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """The plan's report from its task rows (``tasks`` joined with ``estimates``).

    Completed tasks satisfy their dependants; tasks not yet estimated are listed but left
    out of the path and the forecast (``pending_estimates`` counts them).

    Raises:
        DependencyError: the stored dependencies have a cycle or name a missing task.
    """
    done = {r["task_id"] for r in rows if r["status"] == "completed"}
    remaining = [r for r in rows if r["task_id"] not in done and r["hours_p50"] is not None]
    known = {r["task_id"] for r in rows}
    deps = {
        r["task_id"]: [d for d in r["dependencies"] if d in known and d not in done] for r in rows
    }
    ids = [r["task_id"] for r in remaining]
    # Tasks not in the simulation (finished, or not estimated yet) hold nobody up.
    settled = done | (known - set(ids))
    hours = {r["task_id"]: r["hours_p50"] for r in remaining}
    path, path_hours = critical_path(ids, deps, hours, done=settled)
    forecast = forecast_with_dependencies(
        {r["task_id"]: hours_spread(r["hours_p50"], r["hours_p90"]) for r in remaining},
        deps,
        done=settled,
        seed=seed,
    )
    tally_points = sum(r["story_points"] or 0 for r in rows)
    team_points = sum(r["team_estimate"] or 0 for r in rows)
    return {
        "plan_id": plan_id,
        "tasks": [
            {
                "task_id": r["task_id"],
                "title": r["title"],
                "status": r["status"],
                "dependencies": list(r["dependencies"]),
                "team_estimate": r["team_estimate"],
                "story_points": r["story_points"],
                "hours_p50": r["hours_p50"],
                "hours_p90": r["hours_p90"],
                "velocity_source": r["velocity_source"],
            }
            for r in rows
        ],
        "totals": {
            "tasks": len(rows),
            "completed": len(done),
            "pending_estimates": sum(r["hours_p50"] is None for r in rows),
            "team_points": team_points,
            "tally_points": tally_points,
        },
        "critical_path": {"tasks": path, "hours_p50": round(path_hours, 2)},
        "forecast_hours": {
            "p50": round(forecast.p50, 2),
            "p85": round(forecast.p85, 2),
            "p95": round(forecast.p95, 2),
            "draws": forecast.draws,
        },
    }


async def plan_rows(
    engine: AsyncEngine, plan_id: str, workspace: str | None
) -> list[dict[str, Any]]:
    """A plan's tasks with their estimates (None where not estimated yet), in id order."""
    query = (
        select(
            tasks.c.task_id,
            tasks.c.title,
            tasks.c.status,
            tasks.c.dependencies,
            tasks.c.team_estimate,
            estimates.c.story_points,
            estimates.c.hours_p50,
            estimates.c.hours_p90,
            estimates.c.estimate["velocity_source"].astext.label("velocity_source"),
        )
        .select_from(tasks.outerjoin(estimates, estimates.c.task_id == tasks.c.task_id))
        .where(tasks.c.plan_id == plan_id)
        .order_by(tasks.c.task_id)
    )
    if workspace:
        query = query.where(tasks.c.workspace == workspace)
    async with engine.connect() as conn:
        return [dict(r._mapping) for r in await conn.execute(query)]


class PlanTask(BaseModel):
    task_id: str
    title: str
    status: str
    dependencies: list[str]
    team_estimate: float | None
    story_points: float | None
    hours_p50: float | None
    hours_p90: float | None
    velocity_source: str | None


class PlanTotals(BaseModel):
    tasks: int
    completed: int
    pending_estimates: int
    team_points: float
    tally_points: float


class CriticalPath(BaseModel):
    tasks: list[str]
    hours_p50: float


class Forecast(BaseModel):
    p50: float
    p85: float
    p95: float
    draws: int


class PlanView(BaseModel):
    """A plan's tasks with Tally's estimates beside the team's, path and forecast."""

    plan_id: str
    tasks: list[PlanTask]
    totals: PlanTotals
    critical_path: CriticalPath
    forecast_hours: Forecast


class PlanParams(Params):
    workspace: Workspace | None = None


def plan_router(engine: AsyncEngine) -> APIRouter:
    """The ``/plans/{plan_id}`` route (``?workspace=W`` narrows to one workspace)."""
    router = APIRouter(tags=["plans"])

    @router.get("/plans/{plan_id}", response_model=PlanView)
    async def show(
        plan_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")],
        q: Annotated[PlanParams, Query()],
        who: ReportsRead,
    ) -> dict[str, Any]:
        """A plan: Tally's estimates beside the team's, critical path, completion forecast."""
        rows = await plan_rows(engine, plan_id, who.workspace_for(q.workspace))
        if not rows:
            raise not_found("plan_id", f"plan {plan_id} not found")
        try:
            return plan_view(plan_id, rows)
        except DependencyError as exc:
            raise bad_parameter("plan_id", f"plan {plan_id}: {exc}") from None

    return router
