"""Learning jobs: train a routing policy on recorded runs, evaluate it, promote it.

A job is started, read, listed, cancelled and promoted with ``learner.job.command``
(request/reply, answered by the learner, which owns the jobs). A started job waits on the
``LEARNING_JOBS`` work queue, one subject per priority, until one of the learner's job
workers takes it; P0 is always taken before P1, and P1 before P2.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from tally import subjects
from tally.events.envelope import Event, Model

Priority = Literal["P0", "P1", "P2"]
#: Priorities, the one a worker takes first first.
PRIORITIES: tuple[Priority, ...] = ("P0", "P1", "P2")
JobStatus = Literal["queued", "running", "evaluating", "completed", "failed", "cancelled"]
#: Statuses a job never leaves.
FINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
#: The weights a shaped reward takes (see ``services.learner.rewards.ShapingConfig``).
REWARD_WEIGHTS = ("tool_use_bonus", "verification_bonus", "step_penalty", "step_budget")
#: A window of recorded runs: a number of hours, days or weeks.
WINDOW_PATTERN = r"^[1-9][0-9]{0,4}[hdw]$"


class JobConfig(Model):
    """What a learning job trains on and how.

    The data are the workspace's recorded runs that finished within ``window`` (``30d``,
    ``12h``, ``2w``), optionally only of some task types (``feature``) or classes
    (``feature|medium``) and models. Rewards come from the reward registry (``reward``,
    shaped terms weighted by ``reward_weights``), with multi-step credit across a task's
    attempts discounted by ``gamma``.
    """

    window: str = Field("30d", pattern=WINDOW_PATTERN)
    task_classes: tuple[str, ...] = Field((), max_length=50)
    models: tuple[str, ...] = Field((), max_length=50)
    reward: str = Field("outcome_shaped", min_length=1, max_length=64)
    reward_weights: dict[str, float] = Field(default_factory=dict)
    lr: float = Field(0.5, gt=0, le=10)
    clip: float = Field(0.2, gt=0, le=10)
    exploration: float = Field(0.1, ge=0, le=1)
    gamma: float = Field(0.9, ge=0, le=1)
    cost_weight: float = Field(0.3, ge=0, le=10)
    group_size: int = Field(4, ge=2, le=1000)
    iterations: int = Field(50, ge=1, le=1_000_000)
    #: Share of task ids held out of training: the evaluation set.
    eval_share: float = Field(0.2, gt=0, lt=1)
    #: Evaluate (and checkpoint) every this many iterations, and after the last one.
    eval_every: int = Field(10, ge=1)
    #: Compute budget in dollars (CPU time priced by the learner's setting); None: none.
    budget_usd: float | None = Field(None, gt=0)
    priority: Priority = "P1"
    #: Promote the candidate when it is significantly better than the live policy.
    auto_promote: bool = False
    #: Significance level of the comparison with the live policy.
    alpha: float = Field(0.05, gt=0, lt=1)
    seed: int = Field(0, ge=0, le=2**31)

    @field_validator("reward_weights")
    @classmethod
    def _known_weights(cls, value: dict[str, float]) -> dict[str, float]:
        for name, weight in value.items():
            if name not in REWARD_WEIGHTS:
                raise ValueError(
                    f"reward_weights: unknown weight {name!r} (known: {', '.join(REWARD_WEIGHTS)})"
                )
            if weight < 0:
                raise ValueError(f"reward_weights.{name}: must be >= 0, got {weight}")
        return value

    @field_validator("task_classes")
    @classmethod
    def _classes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not item or item.count("|") > 1:
                raise ValueError(f"task_classes: expected 'type' or 'type|band', got {item!r}")
        return value


class LearningJobQueued(Event):
    """A job waiting for a worker (its row in ``learning_jobs`` holds the rest)."""

    subject: ClassVar[str] = subjects.LEARNER_JOB_QUEUED_P1

    job_id: str = Field(min_length=1, max_length=64)
    priority: Priority


class JobQueuedP0(LearningJobQueued):
    """A P0 job waiting for a worker."""

    subject: ClassVar[str] = subjects.LEARNER_JOB_QUEUED_P0


class JobQueuedP1(LearningJobQueued):
    """A P1 job waiting for a worker."""

    subject: ClassVar[str] = subjects.LEARNER_JOB_QUEUED_P1


class JobQueuedP2(LearningJobQueued):
    """A P2 job waiting for a worker."""

    subject: ClassVar[str] = subjects.LEARNER_JOB_QUEUED_P2


#: The queued event of each priority.
QUEUED: dict[str, type[LearningJobQueued]] = {
    "P0": JobQueuedP0,
    "P1": JobQueuedP1,
    "P2": JobQueuedP2,
}

JobAction = Literal["start", "get", "list", "cancel", "promote", "report"]


class LearningJobCommand(Event):
    """Ask the learner to start, read, list, cancel or promote jobs of the workspace.

    ``start`` needs ``config`` (``name`` optional); ``get``, ``cancel``, ``promote`` and
    ``report`` need ``job_id``; ``promote`` records ``by`` (who) and ``note`` (why);
    ``list`` takes ``status`` and ``limit``.
    """

    subject: ClassVar[str] = subjects.LEARNER_JOB_COMMAND

    action: JobAction
    job_id: str | None = Field(None, max_length=64)
    name: str | None = Field(None, max_length=128)
    config: JobConfig | None = None
    by: str | None = Field(None, max_length=128)
    note: str | None = Field(None, max_length=1000)
    status: JobStatus | None = None
    limit: int = Field(50, ge=1, le=1000)


class LearningJobReply(Model):
    """The jobs a command concerns, each as ``tally learn status --json`` shows it."""

    jobs: list[dict[str, Any]] = Field(default_factory=list)
