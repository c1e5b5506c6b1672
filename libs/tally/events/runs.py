"""Run events: an agent's run of a task from start to finish, and the tracker's record of it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from tally import subjects
from tally.events.envelope import Event, Model, Timestamp
from tally.money import usd_to_micros

Outcome = Literal["complete", "stopped", "error"]


class RunStarted(Event):
    """An agent started working on an assigned task."""

    subject = subjects.RUN_STARTED

    run_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(min_length=1, max_length=128)
    assignment_id: str | None = None
    reservation_id: str | None = None
    model: str | None = None
    provider: str | None = None
    agent_id: str | None = None
    agent_ids: tuple[str, ...] = ()
    command: str | None = None
    job_id: str | None = None
    started_at: Timestamp


class _Timed(Model):
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Timed:
        if self.started_at and self.finished_at and self.finished_at < self.started_at:
            raise ValueError("finished_at is before started_at")
        return self


class PhaseStart(Model):
    kind: Literal["phase_start"]
    phase: str = Field(min_length=1)
    attempt: int = Field(1, ge=1)


class PhaseEnd(Model):
    kind: Literal["phase_end"]
    phase: str = Field(min_length=1)
    attempt: int = Field(1, ge=1)


class WorkerCall(_Timed):
    """One call to a model by a worker. ``usage`` is the provider's usage payload, as-is."""

    kind: Literal["worker_call"]
    worker: str | None = None
    model: str | None = None
    provider: str | None = None
    usage: dict[str, Any] = Field(default_factory=dict)
    latency_ms: float | None = Field(None, ge=0)
    cost_usd: float | None = Field(None, ge=0)
    action: str | None = None
    invocation_kind: str | None = None
    currency: str = "USD"
    command: str | None = None
    phase: str | None = None


class Verification(Model):
    kind: Literal["verification"]
    command: str
    tier: str | None = None
    passed: bool
    duration_ms: float | None = Field(None, ge=0)
    retry: int = Field(0, ge=0)


class SubtaskStarted(Model):
    kind: Literal["subtask_started"]
    subtask: str = Field(min_length=1)


class SubtaskCompleted(Model):
    kind: Literal["subtask_completed"]
    subtask: str = Field(min_length=1)
    success: bool = True
    quality: float | None = Field(None, ge=0, le=1)


class Checkpoint(Model):
    kind: Literal["checkpoint"]
    verified: bool
    commit: str | None = None


class Changes(Model):
    kind: Literal["changes"]
    files: tuple[str, ...] | int = 0
    lines_added: int = Field(0, ge=0)
    lines_removed: int = Field(0, ge=0)


class Milestone(Model):
    kind: Literal["milestone"]
    name: str
    status: Literal["planned", "completed"]


class Note(Model):
    kind: Literal["note"]
    text: str = Field(max_length=10_000)


Detail = Annotated[
    PhaseStart
    | PhaseEnd
    | WorkerCall
    | Verification
    | SubtaskStarted
    | SubtaskCompleted
    | Checkpoint
    | Changes
    | Milestone
    | Note,
    Field(discriminator="kind"),
]


class RunEvent(Event):
    """One timeline event of a run; ``detail.kind`` says which."""

    subject = subjects.RUN_EVENT

    run_id: str = Field(min_length=1, max_length=128)
    at: Timestamp
    detail: Detail


class QualitySignals(Model):
    tests_passed: int | None = Field(None, ge=0)
    tests_failed: int | None = Field(None, ge=0)
    bugs_found: int | None = Field(None, ge=0)
    revisions: int | None = Field(None, ge=0)
    review_score: float | None = Field(None, ge=0, le=1)


class RunFinished(Event):
    """An agent finished (or gave up on) a run."""

    subject = subjects.RUN_FINISHED

    run_id: str = Field(min_length=1, max_length=128)
    task_id: str = Field(min_length=1, max_length=128)
    outcome: Outcome
    success: bool
    finished_at: Timestamp
    reservation_id: str | None = None
    quality: QualitySignals = Field(default_factory=QualitySignals)
    #: How many ``run.event`` messages the agent published for this run, when it knows:
    #: the tracker waits (briefly) for all of them before totalling.
    event_count: int | None = Field(None, ge=0)


class TokenTotals(Model):
    """Token counts by kind. ``input_tokens`` excludes cache reads and cache writes."""

    input_tokens: int = Field(0, ge=0)
    output_tokens: int = Field(0, ge=0)
    cache_read_tokens: int = Field(0, ge=0)
    cache_write_tokens: int = Field(0, ge=0)
    reasoning_tokens: int = Field(0, ge=0)

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )


class RunRecorded(Event):
    """The tracker's totals of a finished run: what the learner and reporter consume."""

    subject = subjects.RUN_RECORDED

    run_id: str
    task_id: str
    model: str | None = None
    provider: str | None = None
    task_type: str | None = None
    band: str | None = None
    reservation_id: str | None = None
    outcome: Outcome
    success: bool
    started_at: Timestamp
    finished_at: Timestamp
    actual_hours: float = Field(ge=0)
    subtask_hours: dict[str, float] = Field(default_factory=dict)
    story_points: float | None = None
    estimated_hours: float | None = None
    estimation_error: float | None = None
    velocity: float | None = None
    tokens: TokenTotals = Field(default_factory=TokenTotals)
    #: the priced calls' cost in dollars, for people: ``cost_micros`` / 1e6
    cost_usd: float = Field(0, ge=0)
    #: the priced calls' cost in integer micro-dollars, exactly as ``token_usage`` sums it;
    #: None from a sender that predates it (then ``cost_usd`` is read)
    cost_micros: int | None = Field(None, ge=0)
    #: tokens of the calls no price was known for: not in the cost; quota charges them at
    #: the subscription's fallback price so a budget is never bypassed
    unpriced_tokens: TokenTotals = Field(default_factory=TokenTotals)
    quality_score: float | None = Field(None, ge=0, le=1)
    worker_calls: int = Field(0, ge=0)
    verifications_passed: int = Field(0, ge=0)
    #: events totalled; a run totalled again after late events is republished with more
    event_count: int = Field(0, ge=0)
    #: events ``run.finished`` announced, if it did (fewer totalled: some never arrived)
    expected_events: int | None = Field(None, ge=0)

    @property
    def micros(self) -> int:
        """The priced cost in micro-dollars (from ``cost_usd`` when ``cost_micros`` is absent)."""
        return self.cost_micros if self.cost_micros is not None else usd_to_micros(self.cost_usd)
