"""A workspace's models, built from its history: points from text, hours from measured time.

Building fits the points model (with its rolling-origin check against the history median)
and indexes measured durations; it is CPU work that the service runs off the event loop,
once per change of history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.estimator.hours import Duration, HoursModel
from services.estimator.points_model import HistoricalTask, PointsModel
from services.estimator.scoring import ScoringConfig


class HistoryRow(Protocol):
    """An imported completed task, as a ``history_tasks`` row or a ``HistoryRecord``."""

    task_id: str
    title: str
    description: str
    story_points: float
    task_type: str | None
    actual_hours: float | None
    model: str | None


def historical_task(row: HistoryRow) -> HistoricalTask:
    """The points model's view of an imported completed task."""
    return HistoricalTask(
        row.task_id,
        row.title,
        row.description,
        row.story_points,
        row.task_type,
        (),
        row.actual_hours,
        row.model,
    )


def imported_durations(history: Sequence[HistoricalTask]) -> list[Duration]:
    """Measured durations carried by history rows (imported ``actual_hours``)."""
    return [
        Duration(t.story_points, t.actual_hours, t.model, t.task_type, t.task_id)
        for t in history
        if t.actual_hours is not None
    ]


@dataclass(frozen=True)
class WorkspaceModel:
    """Everything an estimate of one workspace needs from its history."""

    points: PointsModel | None
    hours: HoursModel

    @property
    def history_size(self) -> int:
        return 0 if self.points is None else len(self.points)


def build_workspace(
    history: Sequence[HistoricalTask], durations: Sequence[Duration], config: ScoringConfig
) -> WorkspaceModel:
    """Fit a workspace's models on its history (oldest first) and measured durations.

    ``durations`` are the measured times other than the history's own ``actual_hours``
    (runs, lane times); a task whose history row carries its hours is counted once, by them.
    """
    points = PointsModel(history, config.points) if history else None
    own = imported_durations(history)
    timed = {d.task_id for d in own}
    others = [d for d in durations if d.task_id is None or d.task_id not in timed]
    hours = HoursModel([*own, *others], config.velocity)
    return WorkspaceModel(points, hours)
