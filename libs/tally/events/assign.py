"""Requests and notices of the assigner and the quota service beyond the core chain.

Every subject here is request/reply or a core-NATS notice: none is captured by a stream
(a stream's PubAck would answer a request before the service does), and a missed notice
costs only a delay, because the assigner also retries on a timer.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model, Timestamp
from tally.events.tasks import Estimate

# Re-exported for the modules that name them from here.
QUOTA_FREEZE = subjects.QUOTA_FREEZE
QUOTA_REBUILD = subjects.QUOTA_REBUILD
QUOTA_FREED = subjects.QUOTA_FREED
ASSIGN_EXPERIMENT = subjects.ASSIGN_EXPERIMENT
ASSIGN_BATCH = subjects.ASSIGN_BATCH


class FreezeRequest(Event):
    """Stop (``frozen=True``) or resume all new reservations of a subscription."""

    subject = QUOTA_FREEZE

    subscription: str = Field(min_length=1, max_length=64)
    frozen: bool = True


class FreezeReply(Model):
    """The subscription's freeze switch after the request."""

    subscription: str
    frozen: bool


class RebuildRequest(Event):
    """Rewrite Redis counters and live reservations from the ledger (after Redis lost them)."""

    subject = QUOTA_REBUILD


class RebuildReply(Model):
    """What a rebuild wrote: windows per subscription and live reservations restored."""

    windows: int
    reservations: int
    subscriptions: list[dict[str, Any]] = Field(default_factory=list)
    #: Subscriptions whose recorded freeze switch was restored as frozen.
    frozen: list[str] = Field(default_factory=list)


class QuotaFreed(Event):
    """Quota came back to a subscription (release, settle below the reservation, expiry,
    unfreeze or rebuild): tasks deferred for lack of it may now fit."""

    subject = QUOTA_FREED

    subscription: str
    cause: str


class Variant(Model):
    """One arm of an experiment: its name and the strategy it assigns with."""

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_-]+$")
    strategy: str
    weight: float = Field(gt=0)


class Experiment(Model):
    """An A/B experiment: tasks (optionally of one type) split between strategies."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")
    variants: tuple[Variant, ...] = Field(min_length=2)
    task_type: str | None = None
    active: bool = True
    created_at: Timestamp | None = None


class ExperimentRequest(Event):
    """Create (``action="create"``), list or stop experiments."""

    subject = ASSIGN_EXPERIMENT

    action: str = Field(pattern=r"^(create|list|stop)$")
    experiment: Experiment | None = None
    name: str | None = None


class ExperimentReply(Model):
    experiments: list[Experiment]


class RecommendRequest(Event):
    """Which model would the assigner pick for this estimate (nothing is reserved)."""

    subject = subjects.ASSIGN_RECOMMEND

    estimate: Estimate
    strategy: str | None = None


class RecommendReply(Model):
    """The pick, the runner-up, and why; ``model`` is None when no model passes the filters."""

    model: str | None = None
    runner_up: str | None = None
    strategy: str
    reason: str
    expected_cost_usd: float | None = None
    candidates: list[str] = Field(default_factory=list)


class PlanItem(Model):
    """One task of a batch plan and the model chosen for it (``None``: left pending)."""

    task_id: str
    model: str | None = None
    subscription: str | None = None
    tokens: int = 0
    cost_usd: float = 0
    value: float = 0
    status: str = "planned"


class BatchRequest(Event):
    """Plan the pending (deferred) tasks together; with ``commit`` also reserve and publish.

    A commit carries the plan that was shown (``plan``), so what is published is what was
    printed; an item whose reservation is refused by then stays pending.
    """

    subject = ASSIGN_BATCH

    strategy: str | None = None
    commit: bool = False
    plan: list[PlanItem] = Field(default_factory=list)
    limit: int = Field(500, ge=1, le=10_000)


class BatchReply(Model):
    """The plan (or what was carried out) and how it was solved."""

    method: str
    items: list[PlanItem]
    total_value: float
