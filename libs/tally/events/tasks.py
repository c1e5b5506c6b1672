"""Task events: created, estimated, assigned, deferred, status changes, and estimate RPC."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model, Timestamp

Priority = Literal["P0", "P1", "P2", "P3", "P4"]
Band = Literal["simple", "medium", "complex"]


def band(points: float) -> Band:
    """Complexity band of a point value: simple <= 3, medium 5-8, complex >= 13."""
    if points <= 3:
        return "simple"
    if points < 13:
        return "medium"
    return "complex"


TaskStatus = Literal[
    "backlog", "in_progress", "ready_to_review", "ready_to_qa", "completed", "blocked"
]

#: Descriptions above this many characters are refused (100 kB).
MAX_DESCRIPTION_CHARS = 100_000


class SubtaskSpec(Model):
    """A subtask as the task's author gave it."""

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    story_points: int | None = Field(None, ge=0, le=100)


class TaskSpec(Model):
    """What a task is: the part shared by ``task.created`` and the estimate-only request."""

    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    priority: Priority = "P2"
    labels: tuple[str, ...] = ()
    task_type: str | None = Field(None, max_length=64)
    subtasks: tuple[SubtaskSpec, ...] = ()
    deadline: Timestamp | None = None


class TaskCreated(Event, TaskSpec):
    """A new task: the estimator picks it up, then the assigner."""

    subject = subjects.TASK_CREATED

    task_id: str = Field(min_length=1, max_length=128)
    dependencies: tuple[str, ...] = ()
    plan_id: str | None = Field(None, max_length=128)
    team_estimate: float | None = Field(None, ge=0)


class Evidence(Model):
    """A completed task that informed an estimate."""

    task_id: str
    title: str
    story_points: float
    similarity: float


class TokenEstimate(Model):
    """Expected token use of a task."""

    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    cached_input_tokens: int = Field(0, ge=0)

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens + self.cached_input_tokens


class SubtaskEstimate(Model):
    """Points and hours of one subtask."""

    title: str
    story_points: float = Field(ge=0)
    hours_p50: float
    hours_p90: float


class Estimate(Model):
    """The estimator's answer for one task."""

    task_id: str | None = None
    title: str
    priority: Priority
    labels: tuple[str, ...] = ()
    task_type: str
    #: On the workspace's own scale (the point values its history uses; Fibonacci 1-21
    #: without history).
    story_points: float = Field(ge=0)
    band: Band
    hours_p50: float = Field(ge=0)
    hours_p90: float = Field(ge=0)
    tokens: TokenEstimate
    value_score: float = Field(ge=0, le=100)
    subtasks: tuple[SubtaskEstimate, ...] = ()
    evidence: tuple[Evidence, ...] = ()
    #: Hours from ``measured`` durations or the velocity ``prior``.
    velocity_source: str = "prior"
    #: Points from the workspace's text ``model``, its history ``median`` (its text did not
    #: beat the median inside its history), or cold-start ``prior``.
    points_source: str = "prior"
    #: Filled on estimate-only answers: the model the assigner would pick.
    recommended_model: str | None = None


class TaskEstimated(Event):
    """A task's estimate: the assigner picks a model for it."""

    subject = subjects.TASK_ESTIMATED

    task_id: str = Field(min_length=1, max_length=128)
    estimate: Estimate


class EstimateRequest(Event, TaskSpec):
    """Estimate-only request (``task.estimate``): answered with an :class:`Estimate`, no task."""

    subject = subjects.TASK_ESTIMATE


class Reservation(Model):
    """Quota held for an assignment until the run settles or the reservation expires."""

    reservation_id: str
    subscription: str
    tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    expires_at: Timestamp


class TaskAssigned(Event):
    """A model was chosen and quota reserved: the agent may start."""

    subject = subjects.TASK_ASSIGNED

    task_id: str
    assignment_id: str
    model: str
    provider: str
    subscription: str
    strategy: str
    reason: str = ""
    runner_up: str | None = None
    reservation: Reservation
    attempt: int = Field(1, ge=1)
    arm: str | None = None
    #: The probability the strategy had of choosing ``model`` first (1 for a fixed
    #: order); None when the model is a fallback after a refused reservation. Off-policy
    #: evaluation weighs logged runs by it.
    propensity: float | None = Field(None, ge=0, le=1)


class TaskDeferred(Event):
    """No model fits within quota now; the task is retried after ``retry_after``."""

    subject = subjects.TASK_DEFERRED

    task_id: str
    reason: str
    retry_after: Timestamp
    attempt: int = Field(1, ge=1)


class TaskStatusChanged(Event):
    """A task moved between lanes."""

    subject = subjects.TASK_STATUS_CHANGED

    task_id: str = Field(min_length=1, max_length=128)
    from_status: TaskStatus | None = None
    to_status: TaskStatus
    changed_at: Timestamp
    command: str | None = None
    job_id: str | None = None
    task_run_id: str | None = None
    agent_id: str | None = None
    metadata: dict[str, object] = Field(default_factory=dict)
