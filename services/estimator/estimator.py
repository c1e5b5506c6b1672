"""One estimate, from a task's text to points, hours, tokens and value.

Composes the estimator's pure parts: decomposition, points from the workspace's learned
model, hours from its measured durations, tokens, and value. No I/O: the caller supplies
the workspace's model (:func:`~services.estimator.workspace.build_workspace`).
"""

from __future__ import annotations

from datetime import UTC, datetime

from services.estimator.decompose import extract_features
from services.estimator.hours import HoursModel
from services.estimator.points import PointsQuery, estimate_task_points
from services.estimator.scoring import ScoringConfig
from services.estimator.tokens import TokenCalibration, estimate_tokens
from services.estimator.value import value_score
from services.estimator.workspace import WorkspaceModel
from tally.events import Estimate, Evidence, SubtaskEstimate, TaskSpec, TokenEstimate

#: Task type assumed when a task gives none.
DEFAULT_TYPE = "feature"


def estimate(
    spec: TaskSpec,
    workspace: WorkspaceModel | None,
    config: ScoringConfig,
    *,
    tokens: TokenCalibration | None = None,
    model: str | None = None,
    task_id: str | None = None,
    now: datetime | None = None,
) -> Estimate:
    """Estimate a task.

    Args:
        spec: what the task is.
        workspace: the workspace's points and hours models (None: no history, priors).
        config: the scoring configuration (value weights, points, velocity, tokens).
        tokens: actual/estimated token ratios by task type.
        model: the model expected to do the work, when known.
    """
    task_type = spec.task_type or DEFAULT_TYPE
    given = [s.title for s in spec.subtasks] or None
    pts = estimate_task_points(
        PointsQuery(spec.title, spec.description, task_type, spec.labels),
        workspace.points if workspace else None,
        config.points,
        subtasks=given,
    )
    hours = workspace.hours if workspace else HoursModel((), config.velocity)
    total_hours = hours.hours(pts.total.points, model, task_type)
    features = extract_features(spec.title, spec.description, spec.labels, task_type, given)
    tok = estimate_tokens(pts.total.points, task_type, features, tokens, config.tokens)
    value = value_score(
        spec.priority,
        pts.total.band,
        spec.labels,
        f"{spec.title}\n{spec.description}",
        spec.deadline,
        now or datetime.now(UTC),
        config.value,
    )
    return Estimate(
        task_id=task_id,
        title=spec.title,
        priority=spec.priority,
        labels=spec.labels,
        task_type=task_type,
        story_points=pts.total.points,
        band=pts.total.band,
        hours_p50=round(total_hours.p50, 2),
        hours_p90=round(total_hours.p90, 2),
        tokens=TokenEstimate(
            input_tokens=tok.input - tok.cached_input,
            output_tokens=tok.output,
            cached_input_tokens=tok.cached_input,
        ),
        value_score=round(value.score, 1),
        subtasks=tuple(
            SubtaskEstimate(
                title=s.subtask.title,
                story_points=s.points,
                hours_p50=round(h.p50, 2),
                hours_p90=round(h.p90, 2),
            )
            for s in pts.subtasks
            for h in (hours.hours(s.points, model, task_type),)
        ),
        evidence=tuple(
            Evidence(
                task_id=n.task_id,
                title=n.title,
                story_points=n.points,
                similarity=round(n.similarity, 3),
            )
            for n in pts.total.evidence
        ),
        velocity_source=total_hours.source,
        points_source=pts.total.source,
    )
