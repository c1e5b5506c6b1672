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

    @bus.on_batch(TaskAssigned)
    async def on_assigned(events: list[TaskAssigned]) -> None:
        # What is waiting, in one statement: one row per assignment, kept once.
        rows = {
            (e.task_id, e.attempt): {
                "task_id": e.task_id,
                "attempt": e.attempt,
                "workspace": e.workspace,
                "model": e.model,
                "strategy": e.strategy,
                "propensity": e.propensity,
            }
            for e in events
        }
        await jobs.store.save_propensities(list(rows.values()))

    @bus.responder(LearnerReportRequest)
    async def on_report(r: LearnerReportRequest) -> LearnerReport:
        return await learner.report(r)

    @bus.responder(LearningJobCommand)
    async def on_job(c: LearningJobCommand) -> LearningJobReply:
        return await jobs.handle(c)
