"""The assigner under redelivery: a task is assigned once, whatever is delivered again.

A publish of ``task.assigned`` that fails after the reservation was made has the estimate
(or the failed run) redelivered. Meanwhile the ranking may have changed (new scores, a new
policy): the redelivery must announce the assignment already made, not reserve another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from services.assigner.assigner import Assigner
from tally.bus import Bus
from tally.db.tables import assignments, quota_ledger
from tally.events import Event, TaskAssigned

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

from tests.integration import builders as build

pytestmark = pytest.mark.integration


@pytest.fixture
def flaky_announcements(monkeypatch: pytest.MonkeyPatch) -> list[TaskAssigned]:
    """The first publish of each attempt's ``task.assigned`` fails; later ones go out.

    After a failure the assigner's ranking is reversed, as if the learner's scores changed
    before the redelivery. Returns the announcements that failed.
    """
    failed: list[TaskAssigned] = []
    publish, publish_many, ranked = Bus.publish, Bus.publish_many, Assigner.ranked

    def fail_first(event: Event) -> None:
        if isinstance(event, TaskAssigned) and event.attempt not in {a.attempt for a in failed}:
            failed.append(event)
            raise ConnectionError("nats: publish timed out")

    async def flaky_publish(self: Bus, event: Event) -> bool:
        fail_first(event)
        return await publish(self, event)

    async def flaky_publish_many(self: Bus, events: Sequence[Event], **kw: Any) -> list[bool]:
        for event in events:
            fail_first(event)
        return await publish_many(self, events, **kw)

    async def changed_ranking(self: Assigner, *args: Any, **kwargs: Any) -> Any:
        order = await ranked(self, *args, **kwargs)
        return order[::-1] if failed else order

    monkeypatch.setattr(Bus, "publish", flaky_publish)
    monkeypatch.setattr(Bus, "publish_many", flaky_publish_many)
    monkeypatch.setattr(Assigner, "ranked", changed_ranking)
    return failed


async def reservations_of(h: Harness, task_id: str) -> list[str]:
    q = quota_ledger.c
    stmt = select(q.reservation_id).where(
        q.reservation_id.startswith(f"{task_id}-a"), q.op == "reserve"
    )
    return sorted(r.reservation_id for r in await h.rows(stmt))


async def test_a_redelivered_estimate_announces_the_assignment_already_made(
    harness: Harness, workspace: str, flaky_announcements: list[TaskAssigned]
) -> None:
    h = harness
    await h.start("quota")
    await h.start("assigner", strategy="cheapest_capable", max_attempts=3)
    task = build.estimated(workspace, priority="P1")

    announced: TaskAssigned = await h.answer_to(task, TaskAssigned)  # after one redelivery

    [lost] = flaky_announcements
    assert announced.event_id == lost.event_id
    assert (announced.model, announced.reservation.reservation_id) == (
        lost.model,
        lost.reservation.reservation_id,
    )
    [row] = await h.rows(select(assignments).where(assignments.c.task_id == task.task_id))
    assert (row.model, row.reservation_id) == (
        announced.model,
        announced.reservation.reservation_id,
    )
    assert await reservations_of(h, task.task_id) == [announced.reservation.reservation_id]

    # Delivered once more (past JetStream's dedupe): the same announcement, nothing reserved.
    async with h.client.watch(TaskAssigned, lambda e: e.task_id == task.task_id) as q:
        await h.redeliver(task)
        again = await h.next_item(q, what="the repeated announcement")
    assert again.model_dump(exclude={"occurred_at"}) == announced.model_dump(
        exclude={"occurred_at"}
    )
    assert await reservations_of(h, task.task_id) == [announced.reservation.reservation_id]

    # The run's reservation is the one on record: its failure escalates, once, even when
    # the escalation's own announcement fails first and the failed run is redelivered.
    async with h.client.watch(
        TaskAssigned, lambda e: e.task_id == task.task_id and e.attempt == 2
    ) as q:
        await h.client.publish(build.run_of(announced, success=False, minutes=5, tokens=(9, 1)))
        second = await h.next_item(q, what="attempt 2")
    assert second.model != announced.model
    assert len(flaky_announcements) == 2
    assert second.event_id == flaky_announcements[1].event_id
    assert await reservations_of(h, task.task_id) == sorted(
        [announced.reservation.reservation_id, second.reservation.reservation_id]
    )
    rows = await h.rows(
        select(assignments.c.model, assignments.c.reservation_id)
        .where(assignments.c.task_id == task.task_id)
        .order_by(assignments.c.attempt)
    )
    assert [tuple(r) for r in rows] == [
        (a.model, a.reservation.reservation_id) for a in (announced, second)
    ]
