"""The learner against real NATS and Postgres: each run counted once, scores published."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from tally.db.tables import learner_runs, learner_state, model_scores, velocity_logs
from tally.events import RunRecorded, ScoresUpdated, TokenTotals, new_id, utcnow

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def recorded(workspace: str, run_id: str, **fields: object) -> RunRecorded:
    finished = utcnow()
    values: dict[str, object] = {
        "run_id": run_id,
        "task_id": f"task-{new_id()}",
        "workspace": workspace,
        "model": "claude-sonnet-4",
        "task_type": "feature",
        "band": "medium",
        "outcome": "complete",
        "success": True,
        "started_at": finished - timedelta(hours=2),
        "finished_at": finished,
        "actual_hours": 2.0,
        "story_points": 5,
        "estimated_hours": 1.6,
        "estimation_error": 0.25,
        "velocity": 2.5,
        "tokens": TokenTotals(input_tokens=3_000, output_tokens=1_000),
        "cost_usd": 0.024,
        "quality_score": 0.8,
    }
    return RunRecorded(**{**values, **fields})  # type: ignore[arg-type]


async def test_a_run_recorded_twice_is_learned_once(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("learner")
    run_id = f"run-{new_id()}"
    first = recorded(workspace, run_id)
    async with h.client.watch(ScoresUpdated, lambda e: e.workspace == workspace) as updates:
        assert await h.client.publish(first)
        update = await h.next_item(updates, what="learner.scores.updated")
        # The same event again (past JetStream's dedupe), and the same run under a new
        # event id, as a tracker that recorded it twice would send.
        await h.redeliver(first)
        await h.client.publish(first.model_copy(update={"event_id": new_id()}))
        await h.drained("learner", "run.recorded")
        await h.client.nc.flush()
        assert updates.empty()

    logs = select(func.count()).select_from(velocity_logs).where(velocity_logs.c.run_id == run_id)
    assert await h.scalar(logs) == 1
    log = (await h.rows(select(velocity_logs).where(velocity_logs.c.run_id == run_id)))[0]
    assert log.velocity == pytest.approx(2.5) and log.error_pct == pytest.approx(25.0)
    samples = select(model_scores.c.samples).where(
        model_scores.c.workspace == workspace, model_scores.c.model == "claude-sonnet-4"
    )
    assert await h.scalar(samples) == 1

    assert update.correlation_id == first.event_id
    (row,) = update.scores
    assert (row.model, row.task_type, row.band, row.samples) == (
        "claude-sonnet-4",
        "feature",
        "medium",
        1,
    )
    assert row.velocity_mean == pytest.approx(5 / 2.0)
    assert row.quality_mean == pytest.approx(0.8)
    assert row.success_rate == 1.0
    assert row.cost_mean == pytest.approx(0.024)


async def test_a_second_run_updates_the_same_score(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("learner")
    async with h.client.watch(ScoresUpdated, lambda e: e.workspace == workspace) as updates:
        await h.client.publish(recorded(workspace, f"run-{new_id()}"))
        await h.next_item(updates, what="the first update")
        slower = recorded(
            workspace, f"run-{new_id()}", actual_hours=5.0, velocity=1.0, quality_score=0.6
        )
        await h.client.publish(slower)
        update = await h.next_item(updates, what="the second update")

    (row,) = update.scores
    assert row.samples == 2
    assert row.velocity_mean == pytest.approx((2.5 + 1.0) / 2)
    assert row.quality_mean == pytest.approx(0.7)


async def test_a_re_totalled_run_revises_its_cost_and_tokens(
    harness: Harness, workspace: str
) -> None:
    """Events that reach the tracker after a run was recorded re-total it: a new
    ``run.recorded`` with more events, tokens and cost. The learner learns the run once,
    but its cost and token figures follow the latest revision, not the first."""
    h = harness
    await h.start("learner")
    run_id = f"run-{new_id()}"
    first = recorded(workspace, run_id, event_count=10, worker_calls=4)
    revised = first.model_copy(
        update={
            "event_id": new_id(),
            "event_count": 14,
            "worker_calls": 6,
            "tokens": TokenTotals(input_tokens=5_000, output_tokens=2_000),
            "cost_usd": 0.04,
            "cost_micros": 40_000,
        }
    )
    async with h.client.watch(ScoresUpdated, lambda e: e.workspace == workspace) as updates:
        await h.client.publish(first)
        await h.next_item(updates, what="the first update")
        await h.client.publish(revised)
        update = await h.next_item(updates, what="the update after the re-total")
        # The first revision again, late, under an event id of its own: it changes nothing.
        await h.client.publish(first.model_copy(update={"event_id": new_id()}))
        await h.drained("learner", "run.recorded")
        await h.client.nc.flush()
        assert updates.empty()

    (row,) = update.scores
    assert row.samples == 1
    assert row.cost_mean == pytest.approx(0.04)
    assert row.tokens_per_point == pytest.approx(7_000 / 5)
    run = (await h.rows(select(learner_runs).where(learner_runs.c.run_id == run_id)))[0]
    assert (run.cost_micros, run.tokens) == (40_000, 7_000)
    assert (run.signals["steps"], run.signals["tool_calls"]) == (14, 6)
    logs = select(func.count()).select_from(velocity_logs).where(velocity_logs.c.run_id == run_id)
    assert await h.scalar(logs) == 1
    # Routing weighs models by the cost the evidence holds: the revised one.
    state = await h.scalar(
        select(learner_state.c.state).where(learner_state.c.workspace == workspace)
    )
    runs, _, cost = state["policy"]["overall"]["claude-sonnet-4"]
    assert (runs, cost) == (1, pytest.approx(0.04))
