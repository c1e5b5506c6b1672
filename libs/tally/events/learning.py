"""Asking the learner what it knows: velocity, model scores, the policy, experiments.

``learner.report`` is request/reply (core NATS, in no stream) answered by the learner,
so the CLI can read what only the learner computes without going through Postgres.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model

LEARNER_REPORT = subjects.LEARNER_REPORT

ReportKind = Literal["velocity", "models", "experiment", "learning"]


class LearnerReportRequest(Event):
    """Ask the learner for one report about the request's workspace.

    ``velocity``: trend over ``days``, model comparison, accuracy of the last tasks;
    ``models``: scores and the routing policy; ``experiment``: the A/B analysis of
    ``experiment`` and the held-out evaluation; ``learning``: the last daily report.
    """

    subject = LEARNER_REPORT

    kind: ReportKind
    days: int = Field(30, ge=1, le=3650)
    experiment: str | None = Field(None, max_length=64)


class LearnerReport(Model):
    """The learner's answer: the report's kind, its workspace, and its content."""

    kind: ReportKind
    workspace: str
    data: dict[str, Any] = Field(default_factory=dict)
