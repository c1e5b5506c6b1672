"""The assigner follows the learner's routing policy as soon as it is published.

Against real NATS, Postgres and Redis, with the quota service running; the policy is
published on the bus as the learner would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from services.assigner.selection import route_seed, sampled_order
from tally.events import (
    PolicyUpdated,
    RunRecorded,
    TaskAssigned,
    TaskEstimated,
)
from tally.events.assign import RecommendReply, RecommendRequest
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

from tests.integration import builders as build

pytestmark = pytest.mark.integration

REGISTRY = ModelRegistry(CONFIG_DIR / "models.yaml")
NAMES = tuple(m.name for m in REGISTRY.models())


def estimated(workspace: str) -> TaskEstimated:
    return build.estimated(
        workspace,
        title="Fix the flaky retry",
        task_type="bugfix",
        value=40.0,
        points=2,
        band="simple",
        hours=(1.0, 2.0),
        tokens=(4_000, 1_000),
    )


def policy(workspace: str, version: int, probs: dict[str, float]) -> PolicyUpdated:
    return PolicyUpdated(
        workspace=workspace,
        version=version,
        probabilities={"bugfix|simple": {n: probs.get(n, 0.0) for n in NAMES}},
        models=NAMES,
    )


async def assigned_for(h: Harness, task: TaskEstimated, attempt: int = 1) -> TaskAssigned:
    async with h.client.watch(
        TaskAssigned, lambda e: e.task_id == task.task_id and e.attempt == attempt
    ) as q:
        if attempt == 1:
            await h.client.publish(task)
        return await h.next_item(q, what=f"attempt {attempt} of {task.task_id}")


async def recommended(h: Harness, workspace: str) -> str | None:
    reply = await h.client.request(
        RecommendRequest(estimate=estimated(workspace).estimate, workspace=workspace),
        RecommendReply,
        step="assigner",
    )
    return reply.model


async def adopted(h: Harness, workspace: str, model: str) -> Any:
    async def check() -> bool:
        return await recommended(h, workspace) == model

    return await h.eventually(check, what=f"the policy's pick {model}")


def failed(a: TaskAssigned) -> RunRecorded:
    return build.run_of(a, success=False, minutes=6, tokens=(4_000, 500))


async def test_a_published_policy_changes_the_choice_without_a_restart(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner", strategy="learned")
    before = await assigned_for(h, estimated(workspace))
    # The policy's favourite is a model the score ranking did not pick.
    favourite = next(n for n in reversed(NAMES) if n != before.model)

    await h.client.publish(policy(workspace, 5, {favourite: 1.0}))
    await adopted(h, workspace, favourite)
    after = [await assigned_for(h, estimated(workspace)) for _ in range(3)]
    assert {a.model for a in after} == {favourite}
    assert all(a.strategy == "learned" for a in after)

    # An older version (a late or replayed message) never replaces a newer policy.
    await h.client.publish(policy(workspace, 4, {before.model: 1.0}))
    newer = next(n for n in NAMES if n not in {favourite, before.model})
    await h.client.publish(policy(workspace, 6, {newer: 1.0}))
    await adopted(h, workspace, newer)
    assert (await assigned_for(h, estimated(workspace))).model == newer


async def test_escalation_under_the_policy_never_returns_to_a_failed_model(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner", strategy="learned", max_attempts=3)
    first_choice, second_choice = NAMES[-1], NAMES[0]
    probs = {first_choice: 0.9, second_choice: 0.1}
    await h.client.publish(policy(workspace, 1, probs))
    await adopted(h, workspace, first_choice)

    # The first pick is a draw seeded by the task id: take a task that draws the favourite.
    task = estimated(workspace)
    while sampled_order(probs, route_seed(task.task_id, 1))[0] != first_choice:
        task = estimated(workspace)
    first = await assigned_for(h, task)
    assert first.model == first_choice
    async with h.client.watch(
        TaskAssigned, lambda e: e.task_id == task.task_id and e.attempt == 2
    ) as q:
        await h.client.publish(failed(first))
        second = await h.next_item(q, what="the escalated attempt")
    # The failed favourite is left out; the policy's remaining mass is all on one model.
    assert second.model == second_choice
    assert "policy after" in second.reason
