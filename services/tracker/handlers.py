"""Tracker subscribers: persist every task, run, timeline event and status change."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import structlog

from services.tracker import rows
from services.tracker.facts import merged
from services.tracker.repo import TrackerRepo
from services.tracker.totals import run_totals
from tally import metrics
from tally.bus import Bus
from tally.db.tables import run_events, runs, token_usage
from tally.errors import Deferred, PermanentError
from tally.events import (
    Event,
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskCreated,
    TaskEstimated,
    TaskStatusChanged,
    utcnow,
)
from tally.events.runs import WorkerCall
from tally.events.tasks import band
from tally.registry import ModelRegistry
from tally.usage import UsageError

log = structlog.get_logger(__name__)

#: ``run.event`` batches handled at once: one commits while the next is copied (a batch
#: waits for one that holds any of its event ids, see `services.tracker.writing`)
EVENT_BATCHES_AT_ONCE = 2


def register(bus: Bus, repo: TrackerRepo, registry: ModelRegistry, *, settle_wait_s: float) -> None:
    """Subscribe the tracker's handlers on ``bus``.

    Args:
        settle_wait_s: how long a finished run whose announced events are not all stored
            yet waits for them (by delayed redelivery, holding nothing) before it is
            recorded with what is stored. Events that come even later re-total it.
    """

    @bus.on_batch(TaskCreated)
    async def on_tasks(events: list[TaskCreated]) -> None:
        # Estimates, models and status changes may have arrived before the task itself.
        await repo.record_tasks([rows.task_row(e) for e in events])

    @bus.on_batch(TaskEstimated)
    async def on_estimated(events: list[TaskEstimated]) -> None:
        await repo.put_facts(merged((e.task_id, rows.estimate_facts(e)) for e in events))

    @bus.on_batch(TaskAssigned)
    async def on_assigned(events: list[TaskAssigned]) -> None:
        await repo.put_facts(merged((e.task_id, {"model": e.model}) for e in events))

    @bus.on_batch(TaskStatusChanged)
    async def on_status(events: list[TaskStatusChanged]) -> None:
        conflicts = await repo.record_status_changes([rows.status_row(e) for e in events])
        await _dead_letter_conflicts(bus, [events[i] for i in sorted(conflicts)])

    @bus.on_batch(RunStarted)
    async def on_started(events: list[RunStarted]) -> None:
        await repo.insert_many((runs, [rows.run_row(e) for e in events]))

    @bus.on_batch(RunEvent, concurrency=EVENT_BATCHES_AT_ONCE)
    async def on_events(events: list[RunEvent]) -> None:
        usage, kept = [], []
        # A call that names no model was made by its run's.
        unnamed = (
            e.run_id for e in events if isinstance(e.detail, WorkerCall) and not e.detail.model
        )
        prices = rows.BatchPrices(registry, await repo.run_models(unnamed))
        for e in events:
            if isinstance(e.detail, WorkerCall):
                try:
                    usage.append(rows.usage_record(e, e.detail, prices))
                except UsageError as exc:  # neither the call nor its usage is stored
                    await bus.dead_letter(
                        subject=RunEvent.subject,
                        payload=e.to_json(),
                        headers={"Nats-Msg-Id": e.event_id},
                        error=exc,
                    )
                    continue
            kept.append(e)
        records = [rows.event_record(e) for e in kept]
        new, stored = await repo.copy_many(
            (run_events, rows.EVENT_COLUMNS, records),
            (token_usage, rows.USAGE_COLUMNS, usage),
        )
        metrics.count_usage(rows.usage_totals(stored), registry)
        if len(new) < len(records):  # known ids: redeliveries, or another body under an id?
            fresh = {id(r) for r in new}
            known = [e for e, r in zip(kept, records, strict=True) if id(r) not in fresh]
            differing = await repo.differing_events([rows.event_record(e) for e in known])
            await _dead_letter_conflicts(bus, [known[i] for i in sorted(differing)])
        # Runs recorded before these events arrived are totalled again: late events
        # (a redelivery after a crash) must reach the totals, the quota and the learner.
        recorded = await repo.any_recorded(e.run_id for e in kept)
        for run in await repo.recorded_runs(recorded):
            metrics.RUNS_RETOTALLED.of("tracker").inc()
            await bus.publish(await _record(repo, rows.finish_of(run), run))

    @bus.on(RunFinished)
    async def on_finished(e: RunFinished) -> None:
        run = await repo.mark_finished(e)
        if run is None:
            raise Deferred(f"run {e.run_id} has not started", delay_s=1.0)
        stored = await repo.event_count(e.run_id)
        if e.event_count is not None and stored < e.event_count:
            waited = (utcnow() - run["finish_seen_at"]).total_seconds()
            if waited < settle_wait_s:
                raise Deferred(f"run {e.run_id}: {stored} of {e.event_count} events stored")
            metrics.RUNS_INCOMPLETE.of("tracker").inc()
            log.warning("run_events_missing", run_id=e.run_id, expected=e.event_count, have=stored)
        await bus.publish(await _record(repo, e, run))
        metrics.RUNS_RECORDED.labels(e.outcome).inc()


async def _dead_letter_conflicts(bus: Bus, events: Sequence[Event]) -> None:
    """Dead-letter events whose id was already stored with a different body."""
    for e in events:
        await bus.dead_letter(
            subject=type(e).subject,
            payload=e.to_json(),
            headers={},  # its id is then the body's hash: each conflicting body once
            error=PermanentError(
                f"event_id {e.event_id} is already stored with a different body "
                "(the first one is kept)"
            ),
        )


async def _record(repo: TrackerRepo, e: RunFinished, run: dict[str, object]) -> RunRecorded:
    """Total a finished run from what is stored, save the totals, and return the event.

    The event's id carries the number of events totalled, so a run totalled again after
    more events arrived is a new message (JetStream would drop a repeat of the old id),
    while totalling the same events again is the same message.
    """
    while True:
        recorded = await _total(repo, e, run)
        # Events stored while this total was made belong in it too: their handler may
        # have looked for recorded totals before these were saved (and found none).
        if await repo.event_count(e.run_id) == recorded.event_count:
            return recorded


async def _total(repo: TrackerRepo, e: RunFinished, run: dict[str, object]) -> RunRecorded:
    task = await repo.task(e.task_id) or {}
    usage, marks, summary = await repo.run_facts(e.run_id)
    started = run["started_at"]
    assert isinstance(started, datetime)
    totals = run_totals(
        started_at=started,
        finished_at=e.finished_at,
        usage=usage,
        marks=marks,
        story_points=task.get("story_points"),
        estimated_hours=task.get("hours_p50"),
        review_score=e.quality.review_score,
    )
    recorded = e.child(
        RunRecorded,
        event_id=f"recorded-{e.run_id}-{summary.events}",
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
        cost_micros=totals.cost_micros,
        unpriced_tokens=totals.unpriced,
        quality_score=totals.quality_score,
        worker_calls=totals.worker_calls,
        verifications_passed=summary.verifications_passed,
        event_count=summary.events,
        expected_events=e.event_count,
    )
    task_values: dict[str, object] = {}
    if e.success:
        task_values = {"completed_at": e.finished_at, "actual_hours": totals.actual_hours}
    await repo.save_totals(e, recorded.model_dump(mode="json", include=TOTALS_FIELDS), task_values)
    return recorded


#: RunRecorded fields kept in ``runs.totals``.
TOTALS_FIELDS = {
    "actual_hours",
    "subtask_hours",
    "tokens",
    "cost_usd",
    "cost_micros",
    "unpriced_tokens",
    "estimation_error",
    "velocity",
    "quality_score",
    "worker_calls",
    "verifications_passed",
    "event_count",
}


def _band_of(points: object) -> str | None:
    return band(points) if isinstance(points, int | float) else None
