"""The tracker takes a task's estimate and model in any order relative to the task itself:
stored on the task once it exists, never redelivered or retried for arriving early."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from tally import metrics
from tally.db.tables import task_facts_pending, tasks
from tally.events import (
    Estimate,
    Reservation,
    TaskAssigned,
    TaskCreated,
    TaskEstimated,
    TaskStatusChanged,
    TokenEstimate,
    new_id,
    utcnow,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def created(task_id: str, ws: str) -> TaskCreated:
    return TaskCreated(task_id=task_id, workspace=ws, title=f"Task {task_id}")


def estimated(task_id: str, ws: str, points: int) -> TaskEstimated:
    return TaskEstimated(
        task_id=task_id,
        workspace=ws,
        estimate=Estimate(
            task_id=task_id,
            title=f"Task {task_id}",
            priority="P2",
            task_type="feature",
            story_points=points,
            band="medium",
            hours_p50=1.5,
            hours_p90=3.0,
            tokens=TokenEstimate(input_tokens=1_000, output_tokens=200),
            value_score=30,
        ),
    )


def assigned(task_id: str, ws: str, model: str) -> TaskAssigned:
    return TaskAssigned(
        task_id=task_id,
        workspace=ws,
        assignment_id=f"{task_id}-a1",
        model=model,
        provider="openai",
        subscription="openai-team",
        strategy="maximize_value",
        reason="test",
        reservation=Reservation(
            reservation_id=f"{task_id}-r",
            subscription="openai-team",
            tokens=1_200,
            cost_usd=0.01,
            expires_at=utcnow(),
        ),
    )


def deferred_count() -> float:
    return sum(
        metrics.EVENTS_DEFERRED.labels("tracker", s)._value.get()
        for s in (TaskEstimated.subject, TaskAssigned.subject)
    )


async def complete(h: Harness, ids: list[str]) -> bool:
    rows = await h.rows(
        select(tasks.c.task_id).where(
            tasks.c.task_id.in_(ids),
            tasks.c.story_points.is_not(None),
            tasks.c.model == "gpt-5",
        )
    )
    return len(rows) == len(ids)


async def test_estimates_and_models_that_overtake_their_task_land_on_it(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    ids = [f"early-{new_id()[:10]}-{i}" for i in range(20)]
    await h.start("tracker")
    before = deferred_count()
    for i, task_id in enumerate(ids):
        await h.client.publish(estimated(task_id, ws, 1 + i % 5))
        await h.client.publish(assigned(task_id, ws, "gpt-5"))
    # Both are held until the tasks arrive, not redelivered.
    await h.eventually(
        lambda: h.scalar(
            select(func.count())
            .select_from(task_facts_pending)
            .where(task_facts_pending.c.task_id.in_(ids), task_facts_pending.c.model.is_not(None))
            .having(func.count() == len(ids))
        ),
        what="the early facts held",
    )
    for task_id in ids:
        await h.client.publish(created(task_id, ws))
    await h.eventually(lambda: complete(h, ids), what="estimates and models on every task")
    points = await h.rows(
        select(tasks.c.task_id, tasks.c.story_points).where(tasks.c.task_id.in_(ids))
    )
    assert {t: p for t, p in points} == {t: 1 + i % 5 for i, t in enumerate(ids)}
    waiting = select(func.count()).select_from(task_facts_pending)
    assert await h.scalar(waiting.where(task_facts_pending.c.task_id.in_(ids))) == 0
    assert deferred_count() == before


async def test_interleaved_arrivals_leave_nothing_behind(harness: Harness, workspace: str) -> None:
    """Created, estimated and assigned race through three consumers: every task ends with
    both facts, and nothing stays in the waiting table."""
    h, ws = harness, workspace
    ids = [f"race-{new_id()[:10]}-{i}" for i in range(300)]
    await h.start("tracker")
    for i, task_id in enumerate(ids):
        events = [created(task_id, ws), estimated(task_id, ws, 3), assigned(task_id, ws, "gpt-5")]
        for e in events[i % 3 :] + events[: i % 3]:  # every order of arrival
            await h.client.publish(e)
    await h.eventually(lambda: complete(h, ids), timeout=60, what="facts on every task")
    waiting = select(func.count()).select_from(task_facts_pending)
    assert await h.scalar(waiting.where(task_facts_pending.c.task_id.in_(ids))) == 0


async def test_a_status_change_racing_its_task_is_never_lost(
    harness: Harness, workspace: str
) -> None:
    """The defect: a task recorded while a status change about it was being stored kept an
    older status (each transaction missed the other's uncommitted row)."""
    import asyncio
    import random
    from datetime import timedelta

    from services.tracker import rows
    from services.tracker.repo import TrackerRepo

    repo = TrackerRepo(harness.engine)
    ids = [f"{workspace}-race-{i}" for i in range(200)]
    at = utcnow()

    def moved(task_id: str, to_status: str, seconds: int) -> dict[str, object]:
        return rows.status_row(
            TaskStatusChanged(
                task_id=task_id,
                workspace=workspace,
                to_status=to_status,
                changed_at=at + timedelta(seconds=seconds),
            )
        )

    work = []
    for lo in range(0, len(ids), 5):
        chunk = ids[lo : lo + 5]
        work.append(repo.record_status_changes([moved(t, "in_progress", 1) for t in chunk]))
        work.append(repo.record_tasks([rows.task_row(created(t, workspace)) for t in chunk]))
        work.append(repo.record_status_changes([moved(t, "ready_to_review", 2) for t in chunk]))
    random.Random(5).shuffle(work)
    await asyncio.gather(*work)

    found = await harness.rows(select(tasks.c.status).where(tasks.c.task_id.in_(ids)))
    assert [r.status for r in found] == ["ready_to_review"] * len(ids)
