"""A workspace's points model: its history indexed, and whether its text earns a vote.

The newest quarter of a workspace's history is held out and estimated from the older three
quarters with the shipped neighbour weights (``scoring.yaml``, one set for every
workspace). The neighbour model must beat the plain history median on those held-out tasks
by ``margin`` (relative mean absolute error of the points users see); otherwise the
workspace is estimated from its history median, since text that does not predict points
only adds noise. Nothing is tuned per workspace: the held-out tasks decide one yes/no
question, so the check is not scored on the data it was fitted to (a per-workspace grid of
weights chosen on ~50 tasks won there and lost on later tasks). Either way the final index
holds the whole history, and the nearest tasks are still cited as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from services.estimator.points import (
    HistoricalTask,
    HistoryIndex,
    PointsQuery,
    estimate_points,
)
from services.estimator.scoring import PointsConfig

#: How the points of a workspace are computed: the shipped neighbour weights (they beat
#: the median on held-out tasks), the history median, or the shipped weights untested (too
#: little history to check them).
PointsModel = Literal["neighbours", "median", "shipped"]


@dataclass(frozen=True)
class PointsSelection:
    """The points configuration a workspace uses, and the held-out evidence for it.

    Attributes:
        config: The weights to estimate with.
        model: Which candidate won.
        validation_tasks: Held-out tasks the choice was made on (0: no choice made).
        neighbours_mae: MAE of the neighbour model on them.
        median_mae: MAE of the history median on them.
    """

    config: PointsConfig
    model: PointsModel
    validation_tasks: int = 0
    neighbours_mae: float | None = None
    median_mae: float | None = None


@dataclass(frozen=True)
class WorkspacePoints:
    """A workspace's history index with the points configuration chosen for it."""

    index: HistoryIndex
    selection: PointsSelection


class HistoryRow(Protocol):
    """An imported completed task, as a ``history_tasks`` row or a ``HistoryRecord``."""

    task_id: str
    title: str
    description: str
    story_points: float
    task_type: str | None
    actual_hours: float | None


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
    )


def median_config(base: PointsConfig) -> PointsConfig:
    """``base`` reduced to the plain history median: no neighbours, groups or recency."""
    return base.model_copy(
        update={"neighbour_weight": 0.0, "group_mass": 0.0, "recency_half_life": 0.0}
    )


def _mae(index: HistoryIndex, tasks: Sequence[HistoricalTask], config: PointsConfig) -> float:
    errors = [
        abs(
            estimate_points(
                PointsQuery(t.title, t.description, t.task_type, t.labels), index, config
            ).points
            - t.story_points
        )
        for t in tasks
    ]
    return sum(errors) / len(errors)


def select_points_config(
    history: Sequence[HistoricalTask],
    base: PointsConfig,
    *,
    validation_share: float = 0.25,
    min_validation: int = 20,
    margin: float = 0.02,
) -> PointsSelection:
    """Check the shipped weights on a workspace's newest tasks, never on future ones.

    Args:
        history: Completed tasks, oldest first.
        base: The shipped weights.
        validation_share: Newest share of ``history`` held out to check on.
        min_validation: Below this many held-out tasks the shipped weights are kept.
        margin: Relative MAE by which the neighbour model must beat the history median
            (fixed in advance, never chosen on the data it decides).
    """
    n_validation = int(len(history) * validation_share)
    if n_validation < min_validation:
        return PointsSelection(base, "shipped")
    older, newest = history[:-n_validation], history[-n_validation:]
    index = HistoryIndex(older)
    median = median_config(base)
    neighbours_mae, median_mae = _mae(index, newest, base), _mae(index, newest, median)
    won = neighbours_mae < median_mae * (1.0 - margin)
    return PointsSelection(
        base if won else median,
        "neighbours" if won else "median",
        n_validation,
        round(neighbours_mae, 4),
        round(median_mae, 4),
    )


def workspace_points(history: Sequence[HistoricalTask], base: PointsConfig) -> WorkspacePoints:
    """Index a workspace's history (oldest first) and choose neighbours or its median."""
    return WorkspacePoints(HistoryIndex(history), select_points_config(history, base))
