"""Under the learned policy, escalation is priced: it stops when no untried model is worth
another attempt at the workspace's value of a solve, well before ``max_attempts``.

Against real NATS, Postgres and Redis, with the quota service running; the policy (with
its posteriors) is published on the bus as the learner would.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import select

from services.assigner.selection import RoutingTable, rank
from tally.db.tables import assigner_tasks
from tally.events import PolicyUpdated, TaskAssigned
from tally.events.assign import RecommendReply, RecommendRequest
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR
from tests.integration import builders as build

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

REGISTRY = ModelRegistry(CONFIG_DIR / "models.yaml")
NAMES = tuple(m.name for m in REGISTRY.models())


def priced_policy(workspace: str, after_failure: tuple[float, float]) -> PolicyUpdated:
    """Every model solves 9 in 10 first attempts at $1 an attempt; after a failure,
    ``after_failure`` is its Beta posterior."""
    row = [90.0, 10.0, *after_failure, 1.0]
    return PolicyUpdated(
        workspace=workspace,
        version=1,
        probabilities={},
        models=NAMES,
        posteriors={"*|*": {n: row for n in NAMES}},
    )


async def task_row(h: Harness, task_id: str) -> tuple[str, str | None]:
    t = assigner_tasks.c
    stmt = select(t.status, t.reason).where(
        t.namespace == h.settings.namespace, t.task_id == task_id
    )
    async with h.engine.connect() as conn:
        row = (await conn.execute(stmt)).first()
    return (row[0], row[1]) if row else ("", None)


@pytest.mark.parametrize(
    ("after_failure", "escalates"),
    [((1.0, 999.0), False), ((900.0, 100.0), True)],
    ids=["hopeless-after-a-failure", "worth-it-after-a-failure"],
)
async def test_escalation_continues_only_while_an_untried_model_is_worth_it(
    harness: Harness,
    workspace: str,
    tmp_path: Path,
    after_failure: tuple[float, float],
    escalates: bool,
) -> None:
    h = harness
    routing = tmp_path / "routing.yaml"
    routing.write_text("default:\n  value_usd: 10.0\n")
    await h.start("quota")
    await h.start("assigner", strategy="learned", max_attempts=3, routing_path=routing)
    policy = priced_policy(workspace, after_failure)
    task = build.estimated(workspace)
    table = RoutingTable(1, {}, NAMES, policy.posteriors)
    expected = [
        c.model.name
        for c in rank("learned", REGISTRY.models(), task.estimate, policy=table, value_usd=10.0)
    ]
    await h.client.publish(policy)

    async def adopted() -> bool:
        reply = await h.client.request(
            RecommendRequest(estimate=task.estimate, workspace=workspace),
            RecommendReply,
            step="assigner",
        )
        return list(reply.candidates) == expected

    await h.eventually(adopted, what="the priced policy adopted")

    async with h.client.watch(TaskAssigned, lambda e: e.task_id == task.task_id) as q:
        await h.client.publish(task)
        first = await h.next_item(q, what="the first attempt")
        await h.client.publish(build.run_of(first, success=False, minutes=5, tokens=(1, 1)))
        if escalates:
            second = await h.next_item(q, what="the escalated attempt")
            assert second.attempt == 2 and second.model != first.model
            return

    async def declined() -> bool:
        return (await task_row(h, task.task_id))[0] == "exhausted"

    # At $10 a solve, a 1-in-1000 chance is worth $0.01 against $1 an attempt.
    await h.eventually(declined, what="the escalation declined")
    _, reason = await task_row(h, task.task_id)
    assert "no untried model is worth another attempt" in (reason or "")
    assert "$10.00 a solve" in (reason or "")
