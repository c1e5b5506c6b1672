"""Newly estimated tasks, assigned a batch at a time.

The tasks waiting when the previous batch was done are answered together: what the
assigner already knows of them is read in one query, their reservations are requested
all at once (each task still tries its ranked models in order, and the quota service
ledgers them with one group commit), assignments and task rows are written in one
transaction, and the answers are published together before the batch is acknowledged.

A task the assigner has met before (a redelivered estimate, a deferred or exhausted task,
an assignment stored before a crash) takes the one-at-a-time path,
:meth:`Assigner.answer`, which repeats what was decided instead of deciding again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from services.assigner.assigner import Assigner
from services.assigner.selection import route_seed
from tally import metrics
from tally.events import TaskAssigned, TaskDeferred, TaskEstimated

#: Estimated tasks answered at most per batch (reservations in flight at once).
BATCH = 64
#: Batches answered at once: a batch mostly waits on quota, Postgres and NATS, and the
#: next one need not wait behind it (tasks are independent of each other).
BATCHES = 4


async def answer_batch(assigner: Assigner, events: Sequence[TaskEstimated]) -> None:
    """Assign (or defer) each newly estimated task once, a batch's worth of round trips
    shared by all of them.

    Raises:
        Exception: a reservation, the write or a publish failed; the batch is delivered
            again, and each task is then answered as decided (reservations are keyed by
            assignment and model, so asking again reserves nothing twice).
    """
    unique: dict[str, TaskEstimated] = {}
    for e in events:  # the same estimate twice in a batch (a redelivery) is answered once
        unique.setdefault(e.task_id, e)
    known = await assigner.repo.known(list(unique))
    await assigner.experiments()  # read once for the batch, not by each task at once
    for task_id in known:
        await assigner.answer(unique.pop(task_id))
    if not unique:
        return
    answers = await asyncio.gather(*(_decide(assigner, e) for e in unique.values()))
    assigned = [a for a in answers if isinstance(a, TaskAssigned)]
    rows = [
        assigner.repo.task_row(unique[a.task_id], "assigned", 1)
        if isinstance(a, TaskAssigned)
        else assigner.repo.task_row(
            unique[a.task_id], "deferred", 1, reason=a.reason, retry_after=a.retry_after
        )
        for a in answers
    ]
    stored = await assigner.repo.record(assigned, rows)
    # Another delivery of a task stored its assignment first: that one stands (ours is
    # given back), announced by the one-at-a-time path.
    lost = {a.assignment_id for a in assigned if a.assignment_id not in stored}
    for mine in assigned:
        if mine.assignment_id in lost and (
            kept := await assigner.repo.assigned(mine.assignment_id)
        ):
            await assigner.kept(unique[mine.task_id], mine, kept, ())
    ours = [a for a in answers if not (isinstance(a, TaskAssigned) and a.assignment_id in lost)]
    await assigner.bus.publish_many(ours)
    for answer in ours:
        if isinstance(answer, TaskAssigned):
            metrics.ASSIGNMENTS.labels(answer.model, answer.strategy).inc()


async def _decide(assigner: Assigner, e: TaskEstimated) -> TaskAssigned | TaskDeferred:
    """A new task's first attempt: its strategy (or A/B arm), its ranked models, and the
    first that quota accepts (see :meth:`Assigner.assign`)."""
    strategy, arm = await assigner.strategy_for(e)
    ranked = await assigner.ranked(
        e.estimate, strategy, workspace=e.workspace, seed=route_seed(e.task_id, 1)
    )
    return await assigner.first_accepted(e, ranked, 1, strategy, arm=arm)
