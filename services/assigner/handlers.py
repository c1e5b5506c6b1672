"""Assigner subscribers: choose a model, reserve its quota, announce the assignment.

Also: escalate a failed run to a stronger model, recommend without reserving, wake the
deferred-task retrier when quota frees, and manage A/B experiments.
"""

from __future__ import annotations

from typing import Any

import structlog

from services.assigner import intake
from services.assigner.assigner import Assigner
from services.assigner.selection import (
    LearnedScore,
)
from tally.bus import Bus
from tally.errors import PermanentError
from tally.events import (
    PolicyUpdated,
    RunRecorded,
    ScoresUpdated,
    TaskEstimated,
)
from tally.events.assign import (
    QUOTA_FREED,
    ExperimentReply,
    ExperimentRequest,
    QuotaFreed,
    RecommendReply,
    RecommendRequest,
)
from tally.replies import answer_refusals

log = structlog.get_logger(__name__)


def register(bus: Bus, assigner: Assigner, wake: Any = None) -> None:
    """Subscribe the assigner's handlers on ``bus``.

    Args:
        wake: called with a subscription name when quota frees (the deferred retrier).
    """

    @bus.on_batch(TaskEstimated, batch_size=intake.BATCH, concurrency=intake.BATCHES)
    async def on_estimated(events: list[TaskEstimated]) -> None:
        await intake.answer_batch(assigner, events)

    @bus.on(RunRecorded)
    async def on_recorded(e: RunRecorded) -> None:
        await assigner.escalate(e)

    @bus.responder(RecommendRequest)
    async def on_recommend(r: RecommendRequest) -> RecommendReply:
        return await assigner.recommend(r)

    @bus.responder(ExperimentRequest)
    @answer_refusals
    async def on_experiment(r: ExperimentRequest) -> ExperimentReply:
        return await assigner.experiment(r)

    if wake is not None:
        # Core NATS, no queue group: every replica's retrier wakes.
        @bus.broker.subscriber(bus.catalog.subject(QUOTA_FREED))
        async def on_freed(body: Any) -> None:
            raw = bus.broker.context.get_local("message").raw_message
            try:
                wake(QuotaFreed.parse(raw.data).subscription)
            except PermanentError as exc:
                log.warning("freed_notice_invalid", error=str(exc))

    @bus.on_broadcast(PolicyUpdated)
    async def on_policy(e: PolicyUpdated) -> None:
        assigner.adopt_policy(e)

    @bus.on_broadcast(ScoresUpdated)
    async def on_scores(e: ScoresUpdated) -> None:
        for row in e.scores:
            if row.quality_mean is not None and row.velocity_mean is not None:
                assigner.scores[row.model] = LearnedScore(
                    quality=row.quality_mean,
                    velocity=row.velocity_mean,
                    cost=row.cost_mean or 0.0,
                )
