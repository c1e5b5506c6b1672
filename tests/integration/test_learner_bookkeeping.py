"""Runs are learned under the class the assigner routes by, whatever the tracker knew.

The tracker takes a run's band from its own copy of ``task.estimated``; when it handles
``run.finished`` first, the run it records has no task type or band. The learner files it
under the estimator's record of the task, not under ``unknown``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tally.db.tables import learner_runs
from tally.events import PolicyUpdated
from tests.integration.test_learner_learning import FAST, estimated, recorded

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_a_run_finished_before_its_task_was_estimated_is_filed_under_its_band(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **FAST)
    # What the tracker records when run.finished beat task.estimated: no type, no band.
    runs = [
        recorded(workspace, "cheap", success=True, hours=2.0, task_type=None, band=None)
        for _ in range(4)
    ]
    for run in runs:
        await estimated(h, workspace, run.task_id, tokens=2_000)  # feature, medium
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as policies:
        for run in runs:
            await h.client.publish(run)
        await h.drained("learner", "run.recorded")
        policy = await h.next_item(policies, what="the policy")
        while policy.version < 1:
            policy = await h.next_item(policies, what="the policy after a full group")

    r = learner_runs.c
    async with h.engine.connect() as conn:
        filed = (
            await conn.execute(select(r.task_type, r.band).where(r.workspace == workspace))
        ).all()
    assert sorted(filed) == [("feature", "medium")] * 4
    assert "feature|medium" in policy.posteriors
    assert not any("unknown" in key for key in policy.posteriors)
