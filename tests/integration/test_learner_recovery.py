"""The learner loses nothing when it stops between checkpoints, and learns a run once.

Its routing policy (preferences, evidence, version, the runs waiting for a full group) is
written with each run it learns from; a learner that stops without saving a checkpoint
and a new one that takes over end where one uninterrupted learner would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from services.learner.learner import Learner
from services.learner.repo import LearnerRepo
from services.learner.settings import LearnerSettings
from tally.db.tables import learner_state
from tally.events.learning import LearnerReport, LearnerReportRequest
from tally.registry import load_models
from tests.integration.test_learner_learning import FAST, recorded

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: No checkpoint before the learner stops: only the per-run state can carry its learning.
NO_CHECKPOINT = {**FAST, "checkpoint_every": 1_000}


async def learn_one_at_a_time(h: Harness, workspace: str, n: int) -> None:
    for i in range(n):
        model, success = ("cheap", True) if i % 3 else ("pricey", i % 2 == 0)
        await h.client.publish(recorded(workspace, model, success=success, hours=1.0 + i / 10))
        await h.drained("learner", "run.recorded")


async def models_report(h: Harness, workspace: str) -> dict[str, Any]:
    report = await h.client.request(
        LearnerReportRequest(kind="models", workspace=workspace), LearnerReport, step="learner"
    )
    return report.data["policy"]  # type: ignore[no-any-return]


async def stored_state(h: Harness, workspace: str) -> dict[str, Any]:
    state = await h.scalar(
        select(learner_state.c.state).where(learner_state.c.workspace == workspace)
    )
    assert state is not None, "no learner state stored"
    return state  # type: ignore[no-any-return]


def offline_learner() -> Learner:
    """A learner with the service's settings and models, used without bus or database."""
    settings = LearnerSettings(**NO_CHECKPOINT)
    models = [m.name for m in load_models(settings.models_path)]
    return Learner(None, None, settings, models, None)  # type: ignore[arg-type]


async def uninterrupted(h: Harness, workspace: str) -> dict[str, Any]:
    """The state one learner reaches learning the workspace's recorded runs in order."""
    learner = offline_learner()
    state = None
    for run in await LearnerRepo(h.engine).learned_runs(workspace):
        state, _ = learner.learn(run, state)
    assert state is not None
    return state


async def test_a_learner_stopped_between_checkpoints_loses_nothing(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **NO_CHECKPOINT)
    await learn_one_at_a_time(h, workspace, 7)
    await h.stop_all()  # no checkpoint was saved: 3 updates, one run waiting for its group

    await h.start("learner", **NO_CHECKPOINT)
    await learn_one_at_a_time(h, workspace, 6)

    policy = await models_report(h, workspace)
    assert policy["version"] == 6  # 13 runs in groups of 2, one waiting
    expected = await uninterrupted(h, workspace)
    assert expected["version"] == 6
    for key, probs in offline_learner().restore(expected).probabilities().items():
        assert policy["probabilities"][key] == pytest.approx(probs)
    assert await stored_state(h, workspace) == expected


async def test_a_redelivered_run_is_not_learned_twice(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("learner", **NO_CHECKPOINT)
    await learn_one_at_a_time(h, workspace, 3)
    first = recorded(workspace, "cheap", success=True, hours=2.0)
    await h.client.publish(first)
    await h.drained("learner", "run.recorded")
    before = await models_report(h, workspace)
    assert before["version"] == 2

    await h.stop_all()
    await h.start("learner", **NO_CHECKPOINT)
    await h.redeliver(first)
    await h.client.publish(first.model_copy(update={"event_id": f"{first.event_id}-again"}))
    await h.drained("learner", "run.recorded")
    assert await models_report(h, workspace) == before
    assert await stored_state(h, workspace) == await uninterrupted(h, workspace)
