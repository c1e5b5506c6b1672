"""Tracker subscribers: persist every task, run, timeline event and status change."""

from __future__ import annotations

import asyncio
from datetime import datetime

import structlog

from services.tracker import rows
from services.tracker.repo import TrackerRepo
from services.tracker.totals import run_totals
from tally import metrics
from tally.bus import Bus
from tally.db.tables import run_events, runs, task_status_events, tasks, token_usage
from tally.errors import TransientError
from tally.events import (
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskCreated,
    TaskEstimated,
    TaskStatusChanged,
)
from tally.events.runs import WorkerCall
from tally.events.tasks import band
from tally.registry import ModelRegistry
from tally.usage import UsageError

log = structlog.get_logger(__name__)


def register(bus: Bus, repo: TrackerRepo, registry: ModelRegistry, *, settle_wait_s: float) -> None:
    """Subscribe the tracker's handlers on ``bus``."""

    @bus.on_batch(TaskCreated)
    async def on_tasks(events: list[TaskCreated]) -> None:
        await repo.insert_many((tasks, [rows.task_row(e) for e in events]))
        # A task's status changes may have arrived before the task itself.
        await repo.set_latest_status(e.task_id for e in events)

    @bus.on(TaskEstimated)
    async def on_estimated(e: TaskEstimated) -> None:
        est = e.estimate
        if not await repo.update_task(
            e.task_id,
            story_points=est.story_points,
            hours_p50=est.hours_p50,
            hours_p90=est.hours_p90,
            value_score=est.value_score,
            task_type=est.task_type,
        ):
            raise TransientError(f"task {e.task_id} not recorded yet")

    @bus.on(TaskAssigned)
    async def on_assigned(e: TaskAssigned) -> None:
        if not await repo.update_task(e.task_id, model=e.model):
            raise TransientError(f"task {e.task_id} not recorded yet")

    @bus.on_batch(TaskStatusChanged)
    async def on_status(events: list[TaskStatusChanged]) -> None:
        await repo.insert_many((task_status_events, [rows.status_row(e) for e in events]))
        await repo.set_latest_status(e.task_id for e in events)

    @bus.on_batch(RunStarted)
    async def on_started(events: list[RunStarted]) -> None:
        await repo.insert_many((runs, [rows.run_row(e) for e in events]))

    @bus.on_batch(RunEvent)
    async def on_events(events: list[RunEvent]) -> None:
        usage = []
        prices = rows.BatchPrices(registry)
        for e in events:
            if isinstance(e.detail, WorkerCall):
                try:
                    usage.append(rows.usage_record(e, e.detail, prices))
                except UsageError as exc:
                    await bus.dead_letter(
                        subject=RunEvent.subject,
                        payload=e.to_json(),
                        headers={"Nats-Msg-Id": e.event_id},
                        error=exc,
                    )
        _, stored = await repo.copy_many(
            (run_events, rows.EVENT_COLUMNS, [rows.event_record(e) for e in events]),
            (token_usage, rows.USAGE_COLUMNS, usage),
        )
        metrics.count_usage((dict(zip(rows.USAGE_COLUMNS, r, strict=True)) for r in stored), prices)

    @bus.on(RunFinished)
    async def on_finished(e: RunFinished) -> None:
        run = await repo.run(e.run_id)
        if run is None:
            raise TransientError(f"run {e.run_id} has not started yet", delay_s=1.0)
        if e.event_count is not None:
            stored = await _wait_for_events(repo, e.run_id, e.event_count, settle_wait_s)
        else:
            stored = await repo.event_count(e.run_id)
        recorded = await _record(repo, e, run, stored)
        await bus.publish(recorded)
        metrics.RUNS_RECORDED.labels(e.outcome).inc()


async def _wait_for_events(repo: TrackerRepo, run_id: str, expected: int, wait_s: float) -> int:
    """Give a run's in-flight timeline events a moment to land before totalling.

    Returns:
        How many of the run's events are stored (``expected`` unless some never came).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (have := await repo.event_count(run_id)) < expected:
        if loop.time() > deadline:
            log.warning("run_events_missing", run_id=run_id, expected=expected, have=have)
            return have
        await asyncio.sleep(0.1)
    return have


async def _record(
    repo: TrackerRepo, e: RunFinished, run: dict[str, object], event_count: int
) -> RunRecorded:
    task = await repo.task(e.task_id) or {}
    usage, marks = await repo.usage_and_marks(e.run_id)
    started = run["started_at"]
    assert isinstance(started, datetime)
    totals = run_totals(
        started_at=started,
        finished_at=e.finished_at,
        usage=usage,
        marks=marks,
        story_points=task.get("story_points"),  # type: ignore[arg-type]
        estimated_hours=task.get("hours_p50"),  # type: ignore[arg-type]
        review_score=e.quality.review_score,
    )
    recorded = e.child(
        RunRecorded,
        event_id=f"recorded-{e.run_id}",
        run_id=e.run_id,
        task_id=e.task_id,
        model=run.get("model") or task.get("model"),
        provider=run.get("provider"),
        task_type=task.get("task_type"),
        band=_band_of(task.get("story_points")),
        reservation_id=e.reservation_id or run.get("reservation_id"),
        outcome=e.outcome,
        success=e.success,
        started_at=started,
        finished_at=e.finished_at,
        actual_hours=totals.actual_hours,
        subtask_hours=totals.subtask_hours,
        story_points=task.get("story_points"),
        estimated_hours=task.get("hours_p50"),
        estimation_error=totals.estimation_error,
        velocity=totals.velocity,
        tokens=totals.tokens,
        cost_usd=totals.cost_usd,
        quality_score=totals.quality_score,
        worker_calls=totals.worker_calls,
        event_count=event_count,
    )
    task_values: dict[str, object] = {}
    if e.success:
        task_values = {"completed_at": e.finished_at, "actual_hours": totals.actual_hours}
    await repo.finish_run(
        e.run_id,
        e.task_id,
        {
            "finished_at": e.finished_at,
            "outcome": e.outcome,
            "success": e.success,
            "quality": e.quality.model_dump(mode="json"),
            "totals": recorded.model_dump(
                mode="json",
                include={
                    "actual_hours",
                    "subtask_hours",
                    "tokens",
                    "cost_usd",
                    "estimation_error",
                    "velocity",
                    "quality_score",
                    "worker_calls",
                    "event_count",
                },
            ),
        },
        task_values,
    )
    return recorded


def _band_of(points: object) -> str | None:
    return band(points) if isinstance(points, int | float) else None
