"""The learner's A/B analysis finds each run's arm where the assigner recorded it.

Quota, assigner and learner run against real NATS, Postgres and Redis; an experiment is
created through the assigner, tasks are assigned under it, and their runs are recorded.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

import pytest

from services.assigner.experiments import pick_arm
from tally.events import (
    RunRecorded,
    TaskAssigned,
    TaskEstimated,
    new_id,
)
from tally.events.assign import Experiment, ExperimentReply, ExperimentRequest, Variant
from tally.events.learning import LearnerReport, LearnerReportRequest

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

from tests.integration import builders as build

pytestmark = pytest.mark.integration


def estimated(workspace: str) -> TaskEstimated:
    return build.estimated(
        workspace,
        title="Tidy the settings loader",
        task_type="refactor",
        value=40.0,
        points=2,
        band="simple",
        hours=(1.0, 2.0),
        tokens=(3_000, 600),
    )


def recorded(a: TaskAssigned, success: bool) -> RunRecorded:
    return build.run_of(
        a,
        success=success,
        minutes=3,
        tokens=(3_000, 600),
        task_type="refactor",
        band="simple",
        story_points=2,
        cost_usd=0.01,
    )


async def test_experiment_report_counts_runs_per_arm_from_the_assignments(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    # One attempt per task: a failed run is not escalated into a second run here.
    await h.start("assigner", max_attempts=1)
    await h.start("learner", daily_enabled=False, calibration_debounce_s=60)
    name = f"ab-{new_id()[:6]}"
    experiment = Experiment(
        name=name,
        variants=(
            Variant(name="A", strategy="quality_first", weight=50),
            Variant(name="B", strategy="cheapest_capable", weight=50),
        ),
    )
    await h.client.request(
        ExperimentRequest(action="create", experiment=experiment, workspace=workspace),
        ExperimentReply,
        step="assigner",
    )

    expected: Counter[str] = Counter()
    successes: Counter[str] = Counter()
    for _ in range(12):
        task = estimated(workspace)
        async with h.client.watch(TaskAssigned, lambda e, t=task: e.task_id == t.task_id) as q:
            await h.client.publish(task)
            assigned = await h.next_item(q, what="the assignment")
        variant = pick_arm(experiment, task.task_id).name
        assert assigned.arm == f"{name}:{variant}"
        # Arm A always succeeds and arm B always fails: the report must tell them apart.
        await h.client.publish(recorded(assigned, success=variant == "A"))
        expected[variant] += 1
        successes[variant] += variant == "A"
    await h.drained("learner", "run.recorded")

    report = await h.client.request(
        LearnerReportRequest(kind="experiment", experiment=name, workspace=workspace),
        LearnerReport,
        step="learner",
    )
    arms = report.data["arms"]
    assert {arm: row["runs"] for arm, row in arms.items()} == dict(expected)
    for arm, row in arms.items():
        assert row["success_rate"] == successes[arm] / expected[arm]
    assert report.data["known"] is True
