"""A run's historical velocity is the mean of the runs of its type logged before it, kept
as a running sum (``velocity_totals``) rather than averaged over every run each time."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tally.db.tables import velocity_logs, velocity_totals
from tally.events import ScoresUpdated, new_id
from tests.integration.test_learner import recorded

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_each_run_is_compared_with_the_mean_of_the_runs_before_it(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner")
    velocities = [2.0, 4.0, 1.5]
    run_ids = [f"run-{new_id()}" for _ in velocities]
    async with h.client.watch(ScoresUpdated, lambda e: e.workspace == workspace) as updates:
        for run_id, velocity in zip(run_ids, velocities, strict=True):
            first = recorded(workspace, run_id, velocity=velocity)
            await h.client.publish(first)
            await h.next_item(updates, what=f"the update after {run_id}")
        # A redelivery adds nothing to the sums.
        await h.client.publish(first.model_copy(update={"event_id": new_id()}))
        await h.drained("learner", "run.recorded")

    logs = {
        r.run_id: r
        for r in await h.rows(select(velocity_logs).where(velocity_logs.c.workspace == workspace))
    }
    assert logs[run_ids[0]].history_velocity is None
    assert logs[run_ids[1]].history_velocity == pytest.approx(2.0)
    assert logs[run_ids[2]].history_velocity == pytest.approx(3.0)
    assert logs[run_ids[2]].change_pct == pytest.approx((1.5 - 3.0) / 3.0 * 100)
    (totals,) = await h.rows(
        select(velocity_totals).where(velocity_totals.c.workspace == workspace)
    )
    assert (totals.task_type, totals.runs) == ("feature", 3)
    assert totals.velocity_sum == pytest.approx(sum(velocities))
