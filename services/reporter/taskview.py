"""``GET /tasks/{task_id}``: a task as its owners recorded it.

The task and its status history (tracker), its estimate (estimator), its assignments and
where the assigner stands with it (assigner), and its runs (tracker) — read from the
tables each owner writes, never written here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Path
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import RunsRead
from services.reporter.errors import not_found
from tally.db.tables import (
    assigner_tasks,
    assignments,
    estimates,
    runs,
    task_status_events,
    tasks,
)
from tally.events import Estimate, TaskAssigned
from tally.views import Assignment


def task_url(task_id: str) -> str:
    """Where a task is read (ids are percent-encoded: they may hold any character)."""
    return f"/tasks/{quote(task_id, safe='')}"


class AssignerState(BaseModel):
    """Where the assigner stands: ``assigned``, ``deferred`` or ``exhausted``."""

    status: str
    attempt: int
    tries: int
    reason: str
    retry_after: datetime | None
    failed_models: list[str]
    updated_at: datetime


class StatusEntry(BaseModel):
    from_status: str | None
    to_status: str
    changed_at: datetime
    command: str | None
    agent_id: str | None
    task_run_id: str | None


class RunSummary(BaseModel):
    run_id: str
    model: str | None
    agent_id: str | None
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    success: bool | None
    run_url: str


class TaskView(BaseModel):
    """A task with its estimate, assignments, runs and status history."""

    task_id: str
    workspace: str | None
    title: str | None
    priority: str | None
    task_type: str | None
    labels: list[str]
    status: str | None
    plan_id: str | None
    created_at: datetime | None
    completed_at: datetime | None
    actual_hours: float | None
    estimate: Estimate | None
    assignments: list[Assignment]
    assigner: AssignerState | None
    attempts: int
    runs: list[RunSummary]
    status_history: list[StatusEntry]


@dataclass(frozen=True)
class KnownTask:
    status: str
    workspace: str


class TaskRepo:
    """Reads a task from its owners' tables (``namespace``: the assigner's rows of ours)."""

    def __init__(self, engine: AsyncEngine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace

    async def status(self, task_id: str) -> KnownTask | None:
        stmt = select(tasks.c.status, tasks.c.workspace).where(tasks.c.task_id == task_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(stmt)).first()
        return KnownTask(row.status, row.workspace) if row else None

    async def view(self, task_id: str) -> TaskView | None:
        async with self.engine.connect() as conn:
            task = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
            est = await conn.scalar(
                select(estimates.c.estimate).where(estimates.c.task_id == task_id)
            )
            chosen = (
                await conn.execute(
                    select(assignments.c.detail)
                    .where(assignments.c.task_id == task_id)
                    .order_by(assignments.c.created_at, assignments.c.assignment_id)
                )
            ).all()
            state = (
                await conn.execute(
                    select(assigner_tasks).where(
                        assigner_tasks.c.namespace == self.namespace,
                        assigner_tasks.c.task_id == task_id,
                    )
                )
            ).first()
            task_runs = (
                await conn.execute(
                    select(runs)
                    .where(runs.c.task_id == task_id)
                    .order_by(runs.c.started_at.nulls_last(), runs.c.run_id)
                )
            ).all()
            history = (
                await conn.execute(
                    select(task_status_events)
                    .where(task_status_events.c.task_id == task_id)
                    .order_by(task_status_events.c.changed_at, task_status_events.c.event_id)
                )
            ).all()
        if not (task or est or chosen or state or task_runs or history):
            return None
        t: dict[str, Any] = dict(task._mapping) if task else {}
        return TaskView(
            task_id=task_id,
            workspace=t.get("workspace"),
            title=t.get("title"),
            priority=t.get("priority"),
            task_type=t.get("task_type"),
            labels=list(t.get("labels") or []),
            status=t.get("status"),
            plan_id=t.get("plan_id"),
            created_at=t.get("created_at"),
            completed_at=t.get("completed_at"),
            actual_hours=t.get("actual_hours"),
            estimate=Estimate.model_validate(est) if est else None,
            assignments=[
                Assignment.of_event(TaskAssigned.model_validate(r.detail)) for r in chosen
            ],
            assigner=AssignerState(
                status=state.status,
                attempt=state.attempt,
                tries=state.tries,
                reason=state.reason,
                retry_after=state.retry_after,
                failed_models=list(state.failed_models),
                updated_at=state.updated_at,
            )
            if state
            else None,
            attempts=state.attempt if state else len(chosen),
            runs=[
                RunSummary(
                    run_id=r.run_id,
                    model=r.model,
                    agent_id=r.agent_id,
                    started_at=r.started_at,
                    finished_at=r.finished_at,
                    outcome=r.outcome,
                    success=r.success,
                    run_url=f"/runs/{quote(r.run_id, safe='')}",
                )
                for r in task_runs
            ],
            status_history=[
                StatusEntry(
                    from_status=h.from_status,
                    to_status=h.to_status,
                    changed_at=h.changed_at,
                    command=h.command,
                    agent_id=h.agent_id,
                    task_run_id=h.task_run_id,
                )
                for h in history
            ],
        )


def task_router(repo: TaskRepo) -> APIRouter:
    router = APIRouter(tags=["tasks"])

    @router.get("/tasks/{task_id:path}", response_model=TaskView)
    async def show(
        task_id: Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")],
        who: RunsRead,
    ) -> TaskView:
        """A task with its estimate, assignment(s), attempts, runs and status history."""
        view = await repo.view(task_id)
        if view is None or not who.owns(view.workspace):
            raise not_found("task_id", f"task {task_id} not found")
        return view

    return router
