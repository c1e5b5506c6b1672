"""Learner subscribers: every recorded run updates scores, policy and calibration; every
assignment's propensity is kept for off-policy evaluation; learning jobs are commanded."""

from __future__ import annotations

from services.learner.jobs.commands import JobCommands
from services.learner.learner import Learner
from tally.bus import Bus
from tally.events import RunRecorded, TaskAssigned
from tally.events.jobs import LearningJobCommand, LearningJobReply
from tally.events.learning import LearnerReport, LearnerReportRequest


def register(bus: Bus, learner: Learner, jobs: JobCommands) -> None:
    """Subscribe the learner's handlers on ``bus``."""

    @bus.on(RunRecorded)
    async def on_recorded(e: RunRecorded) -> None:
        await learner.record(e)

    @bus.on(TaskAssigned)
    async def on_assigned(e: TaskAssigned) -> None:
        await jobs.store.save_propensity(
            {
                "task_id": e.task_id,
                "attempt": e.attempt,
                "workspace": e.workspace,
                "model": e.model,
                "strategy": e.strategy,
                "propensity": e.propensity,
            }
        )

    @bus.responder(LearnerReportRequest)
    async def on_report(r: LearnerReportRequest) -> LearnerReport:
        return await learner.report(r)

    @bus.responder(LearningJobCommand)
    async def on_job(c: LearningJobCommand) -> LearningJobReply:
        return await jobs.handle(c)
