"""Events the assigner and learner tests publish, built in one place."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tally.events import (
    Estimate,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskEstimated,
    TokenEstimate,
    TokenTotals,
    new_id,
    utcnow,
)


def estimated(
    workspace: str,
    *,
    title: str = "Add OAuth login",
    priority: str = "P2",
    task_type: str = "feature",
    value: float = 45.0,
    points: int = 5,
    band: str = "medium",
    hours: tuple[float, float] = (3.0, 6.0),
    tokens: tuple[int, int] = (40_000, 8_000),
) -> TaskEstimated:
    """A freshly estimated task with its own id."""
    task_id = f"task-{new_id()}"
    return TaskEstimated(
        task_id=task_id,
        workspace=workspace,
        estimate=Estimate(
            task_id=task_id,
            title=title,
            priority=priority,  # type: ignore[arg-type]
            labels=("backend",),
            task_type=task_type,
            story_points=points,
            band=band,  # type: ignore[arg-type]
            hours_p50=hours[0],
            hours_p90=hours[1],
            tokens=TokenEstimate(input_tokens=tokens[0], output_tokens=tokens[1]),
            value_score=value,
        ),
    )


def run_of(
    a: TaskAssigned,
    *,
    success: bool,
    minutes: float,
    tokens: tuple[int, int],
    **fields: Any,
) -> RunRecorded:
    """The tracker's record of a run of assignment ``a`` that just finished."""
    now = utcnow()
    return RunRecorded(
        run_id=f"run-{new_id()}",
        task_id=a.task_id,
        workspace=a.workspace,
        model=a.model,
        reservation_id=a.reservation.reservation_id,
        outcome="complete" if success else "error",
        success=success,
        started_at=now - timedelta(minutes=minutes),
        finished_at=now,
        actual_hours=round(minutes / 60, 2),
        tokens=TokenTotals(input_tokens=tokens[0], output_tokens=tokens[1]),
        **fields,
    )


def bare_run(
    workspace: str,
    task_id: str,
    *,
    started: datetime,
    finished: datetime,
    outcome: str = "complete",
    model: str = "m-test",
    run_id: str | None = None,
) -> tuple[RunStarted, RunFinished]:
    """An agent's run of ``task_id`` with no timeline events: its start and its finish."""
    run_id = run_id or f"run-{new_id()}"
    return (
        RunStarted(
            workspace=workspace, run_id=run_id, task_id=task_id, model=model, started_at=started
        ),
        RunFinished(
            workspace=workspace,
            run_id=run_id,
            task_id=task_id,
            outcome=outcome,  # type: ignore[arg-type]
            success=outcome == "complete",
            finished_at=finished,
            event_count=0,
        ),
    )
