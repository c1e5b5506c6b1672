"""The assigner logs the probability of each choice on ``task.assigned``, and the learner
keeps it for off-policy evaluation."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from tally.db.tables import learner_propensities
from tests.integration.test_routing_policy import NAMES, adopted, assigned_for, estimated, policy

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_a_policy_led_choice_carries_its_probability_to_the_learner(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner", strategy="learned")
    await h.start("learner", daily_enabled=False, jobs_enabled=False)
    first, second = NAMES[-1], NAMES[-2]
    await h.client.publish(policy(workspace, 3, {first: 0.75, second: 0.25}))
    await adopted(h, workspace, first)  # the draw the recommendation makes picks ``first``
    chosen = await assigned_for(h, estimated(workspace))
    assert chosen.model in (first, second)
    assert chosen.propensity == pytest.approx(0.75 if chosen.model == first else 0.25)

    async def kept() -> float | None:
        return await h.scalar(  # type: ignore[no-any-return]
            select(learner_propensities.c.propensity).where(
                learner_propensities.c.task_id == chosen.task_id
            )
        )

    assert await h.eventually(kept, what="the learner to keep the propensity") == pytest.approx(
        chosen.propensity
    )
