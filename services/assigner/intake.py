"""Newly estimated tasks, assigned a batch at a time.

The tasks waiting when the previous batch was done are answered together: what the
assigner already knows of them is read in one query, their reservations are requested
in one request (each task still tries its ranked models in order, and the quota service
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
from services.assigner.selection import Candidate, route_seed
from tally import metrics
from tally.events import ReserveReply, ReserveRequest, TaskAssigned, TaskDeferred, TaskEstimated

#: Estimated tasks answered at most per batch (reservations in flight at once).
BATCH = 256
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
    # What the assigner knows of the tasks is asked while each task's strategy and models
    # are worked out (planning a task met before is wasted, and cheap).
    known_query = asyncio.create_task(assigner.repo.known(list(unique)))
    try:
        await assigner.experiments()  # read once for the batch, not by each task at once
        # In turn: planning rarely waits on anything (strategies and prices are cached),
        # and a task per event would cost an event-loop turn each.
        plans = {task_id: await _plan(assigner, e) for task_id, e in unique.items()}
        known = await known_query
    finally:
        known_query.cancel()  # only if planning failed first
    for task_id in known:
        await assigner.answer(unique.pop(task_id))
    if not unique:
        return
    answers = await _decide(assigner, list(unique.values()), [plans[t] for t in unique])
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


async def _decide(
    assigner: Assigner,
    events: Sequence[TaskEstimated],
    plans: Sequence[tuple[str, str | None, list[Candidate]]],
) -> list[TaskAssigned | TaskDeferred]:
    """Each new task's first attempt (see :meth:`Assigner.assign`) with its strategy (or
    A/B arm) and ranked models (``plans``, in the order of ``events``): reservations asked
    for all tasks in one request, each task's next-ranked model again for those refused,
    until each is reserved or out of models (deferred)."""
    answers: list[TaskAssigned | TaskDeferred | None] = [None] * len(events)
    refusals: list[list[ReserveReply]] = [[] for _ in events]
    next_model = dict.fromkeys(range(len(events)), 0)
    while next_model:
        asks: list[tuple[int, ReserveRequest]] = []
        for i, k in list(next_model.items()):
            e, ranked = events[i], plans[i][2]
            if k >= len(ranked):
                answers[i] = assigner.deferred_event(e, 1, refusals[i])
                del next_model[i]
            else:
                asks.append((i, assigner.reserve_request(e, ranked[k], f"{e.task_id}-a1")))
        if not asks:
            break
        replies = await assigner.reserve_many([request for _, request in asks])
        for (i, _), reply in zip(asks, replies, strict=True):
            strategy, arm, ranked = plans[i]
            if reply.ok:
                k = next_model.pop(i)
                answers[i] = assigner.assigned_event(
                    events[i],
                    ranked,
                    k,
                    reply,
                    1,
                    strategy,
                    arm=arm,
                    note="",
                    refusals=refusals[i],
                    # The first-ranked model's chance; a fallback after a refusal has none.
                    propensity=assigner.propensity(events[i], ranked, ranked, strategy)
                    if k == 0
                    else None,
                )
            else:
                refusals[i].append(reply)
                next_model[i] += 1
    return [a for a in answers if a is not None]


async def _plan(assigner: Assigner, e: TaskEstimated) -> tuple[str, str | None, list[Candidate]]:
    strategy, arm = await assigner.strategy_for(e)
    ranked = await assigner.ranked(
        e.estimate, strategy, workspace=e.workspace, seed=route_seed(e.task_id, 1)
    )
    return strategy, arm, ranked
