"""Learner subscribers: every recorded run updates scores, policy and calibration."""

from __future__ import annotations

from services.learner.learner import Learner
from tally.bus import Bus
from tally.events import RunRecorded
from tally.events.learning import LearnerReport, LearnerReportRequest


def register(bus: Bus, learner: Learner) -> None:
    """Subscribe the learner's handlers on ``bus``."""

    @bus.on(RunRecorded)
    async def on_recorded(e: RunRecorded) -> None:
        await learner.record(e)

    @bus.responder(LearnerReportRequest)
    async def on_report(r: LearnerReportRequest) -> LearnerReport:
        return await learner.report(r)
