"""Story points for a task and its subtasks, from the workspace's learned points model.

With history, points are the conditional median of the workspace's own point values
(:mod:`services.estimator.points_model`), with the nearest past tasks as evidence. Without
history, points come from feature priors on the Fibonacci scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from services.estimator.decompose import SubtaskSpec, TaskFeatures, decompose, extract_features
from services.estimator.points_model import HistoricalTask, Neighbour, PointsModel
from services.estimator.scoring import ColdStartPriors, PointsConfig
from tally.events.tasks import Band, band

__all__ = [
    "FIBONACCI",
    "HistoricalTask",
    "Neighbour",
    "PointsEstimate",
    "PointsQuery",
    "TaskPointsEstimate",
    "cold_start_points",
    "estimate_points",
    "estimate_task_points",
    "to_fibonacci",
]

#: The scale of a workspace without history.
FIBONACCI: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 21)


def to_fibonacci(raw: float) -> int:
    """Nearest Fibonacci point in log space (so 4 rounds to 5, not 3), clamped to 1-21."""
    if not math.isfinite(raw) or raw <= FIBONACCI[0]:
        return FIBONACCI[0]
    return min(FIBONACCI, key=lambda f: abs(math.log(f) - math.log(raw)))


@dataclass(frozen=True)
class PointsQuery:
    """The text and metadata of the task being estimated."""

    title: str
    description: str = ""
    task_type: str | None = None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PointsEstimate:
    """Points for one task, with the evidence behind them.

    Attributes:
        points: Points on the workspace's own scale (Fibonacci without history).
        band: Complexity band of ``points``.
        evidence: Nearest past tasks, most similar first.
        source: ``model`` when the workspace's text model earned a share, ``median`` when
            the workspace is estimated by its history median (the text did not beat it
            inside history), ``prior`` on a cold start.
    """

    points: float
    band: Band
    evidence: tuple[Neighbour, ...] = ()
    source: Literal["model", "median", "prior"] = "model"


@dataclass(frozen=True)
class SubtaskPoints:
    """A subtask's share of its task's points."""

    subtask: SubtaskSpec
    points: float


@dataclass(frozen=True)
class TaskPointsEstimate:
    """Points for a task in total and per subtask."""

    total: PointsEstimate
    subtasks: tuple[SubtaskPoints, ...] = field(default_factory=tuple)


def cold_start_points(features: TaskFeatures, priors: ColdStartPriors) -> float:
    """Points guessed from features alone: type base, size words, files, criteria, lines."""
    raw = priors.type_points.get(features.task_type or "", priors.base_points)
    for word in features.size_words:
        raw *= priors.size_word_factors.get(word, 1.0)
    raw *= 1.0 + priors.per_file * max(features.files_count - 1, 0)
    raw *= 1.0 + priors.per_acceptance * features.acceptance_count
    raw *= 1.0 + priors.per_subtask * max(features.subtask_count - 1, 0)
    if features.estimated_lines:
        # A stated size is the author's own evidence: meet it halfway (geometric mean).
        raw = math.sqrt(raw * max(features.estimated_lines / priors.lines_per_point, 0.5))
    return raw


def _estimates(
    queries: Sequence[PointsQuery], model: PointsModel | None, config: PointsConfig
) -> list[PointsEstimate]:
    if model is None or len(model) == 0:
        out = []
        for q in queries:
            features = extract_features(q.title, q.description, q.labels, q.task_type)
            points = to_fibonacci(cold_start_points(features, config.cold_start))
            out.append(PointsEstimate(float(points), band(points), source="prior"))
        return out
    source: Literal["model", "median"] = "model" if model.fit.beats_median else "median"
    predictions = model.predict([q.title for q in queries], [q.description for q in queries])
    return [PointsEstimate(p.points, band(p.points), p.evidence, source) for p in predictions]


def estimate_points(
    task: PointsQuery, model: PointsModel | None, config: PointsConfig | None = None
) -> PointsEstimate:
    """Estimate a task's points from the workspace's model, or from priors without history."""
    return _estimates([task], model, config or PointsConfig())[0]


def estimate_task_points(
    task: PointsQuery,
    model: PointsModel | None,
    config: PointsConfig | None = None,
    subtasks: Sequence[str | SubtaskSpec] | None = None,
) -> TaskPointsEstimate:
    """Points for a task and its subtasks.

    The total is estimated from the whole task, since history records whole tasks. Each
    subtask receives a share of the total in proportion to its own estimate, on the same
    scale, so subtask points may sum to a little more than the total.
    """
    config = config or PointsConfig()
    specs = decompose(task.title, task.description, subtasks)
    queries = [task]
    if len(specs) > 1:
        queries += [PointsQuery(s.title, s.description, task.task_type, task.labels) for s in specs]
    found = _estimates(queries, model, config)
    total = found[0]
    if len(specs) == 1:
        return TaskPointsEstimate(total, (SubtaskPoints(specs[0], total.points),))
    own = [e.points for e in found[1:]]
    weight = sum(own)
    shares = [p / weight if weight > 0 else 1.0 / len(specs) for p in own]
    snap = model.to_scale if model is not None and len(model) else to_fibonacci
    parts = tuple(
        SubtaskPoints(s, float(snap(total.points * share)))
        for s, share in zip(specs, shares, strict=True)
    )
    return TaskPointsEstimate(total, parts)
