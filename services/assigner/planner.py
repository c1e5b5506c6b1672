"""Batch assignment over the bus: plan the deferred tasks together, then carry it out.

``tally assign --pending`` asks for a plan (``assign.batch``), prints it, and sends it
back with ``commit`` to reserve and publish exactly what was shown.
"""

from __future__ import annotations

from typing import Any

from services.assigner.assigner import Assigner
from services.assigner.batch import BatchTask, Option, Room, plan_batch
from services.assigner.repo import AssignmentRepo, TaskState
from services.assigner.selection import STRATEGIES, Candidate
from tally.bus import Bus
from tally.errors import PermanentError
from tally.events import TaskAssigned
from tally.events.assign import BatchReply, BatchRequest, PlanItem

MICRO = 1_000_000


def room_from_usage(subscriptions: list[dict[str, Any]]) -> dict[str, Room]:
    """What each subscription can still reserve: the tighter of its day and month windows."""
    room = {}
    for s in subscriptions:
        tokens: int | None = None
        micro: int | None = None
        for period in ("day", "month"):
            w = s[period]
            if w["limit_tokens"] is not None:
                left = max(0, w["limit_tokens"] - w["used_tokens"] - w["reserved_tokens"])
                tokens = left if tokens is None else min(tokens, left)
            if w["limit_usd"] is not None:
                left_usd = w["limit_usd"] - w["used_usd"] - w["reserved_usd"]
                left = max(0, round(left_usd * MICRO))
                micro = left if micro is None else min(micro, left)
        if s.get("frozen"):
            tokens, micro = 0, 0
        room[s["subscription"]] = Room(tokens, micro)
    return room


def _option(c: Candidate) -> Option:
    return Option(c.model.name, c.model.subscription, c.tokens, round(c.expected_cost * MICRO))


class BatchPlanner:
    def __init__(self, assigner: Assigner, repo: AssignmentRepo) -> None:
        self.assigner = assigner
        self.repo = repo

    async def _candidates(self, state: TaskState, strategy: str) -> list[Candidate]:
        ranked = await self.assigner.ranked(state.estimated.estimate, strategy)
        return [c for c in ranked if c.model.name not in state.failed_models]

    async def plan(self, r: BatchRequest) -> BatchReply:
        strategy = r.strategy or self.assigner.settings.strategy
        if strategy not in STRATEGIES:
            raise PermanentError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        states = await self.repo.deferred(limit=r.limit)
        if r.commit:
            return await self._commit(r, states, strategy)
        tasks = [
            BatchTask(
                s.estimated.task_id,
                s.estimated.estimate.value_score,
                tuple(_option(c) for c in await self._candidates(s, strategy)),
            )
            for s in states
        ]
        room = room_from_usage((await self.assigner.usage()).subscriptions)
        plan = plan_batch(tasks, room)
        items = [
            PlanItem(
                task_id=t.task_id,
                model=o.model if o else None,
                subscription=o.subscription if o else None,
                tokens=o.tokens if o else 0,
                cost_usd=o.micro_usd / MICRO if o else 0.0,
                value=t.value,
                status="planned" if o else "pending",
            )
            for t in tasks
            for o in [plan.chosen.get(t.task_id)]
        ]
        return BatchReply(method=plan.method, items=items, total_value=plan.total_value(tasks))

    async def _commit(self, r: BatchRequest, states: list[TaskState], strategy: str) -> BatchReply:
        by_id = {s.estimated.task_id: s for s in states}
        done: list[PlanItem] = []
        for item in r.plan:
            state = by_id.get(item.task_id)
            if item.model is None or state is None:
                status = "pending" if state else "not_deferred"
                done.append(item.model_copy(update={"status": status}))
                continue
            chosen = [
                c for c in await self._candidates(state, strategy) if c.model.name == item.model
            ]
            result = await self.assigner.reserve_first(
                state.estimated,
                chosen,
                state.attempt,
                strategy,
                failed_models=state.failed_models,
                note="batch plan; ",
            )
            status = "assigned" if isinstance(result, TaskAssigned) else "refused"
            done.append(item.model_copy(update={"status": status}))
        value = sum(i.value for i in done if i.status == "assigned")
        return BatchReply(method="commit", items=done, total_value=value)


def register_batch(bus: Bus, planner: BatchPlanner) -> None:
    """Answer ``assign.batch`` requests."""

    @bus.responder(BatchRequest)
    async def on_batch(r: BatchRequest) -> BatchReply:
        return await planner.plan(r)
