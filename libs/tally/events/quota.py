"""Quota events and the quota service's request/reply messages."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model, Timestamp


class ReserveRequest(Event):
    """Ask the quota service to hold tokens and dollars for an assignment (``quota.reserve``)."""

    subject = subjects.QUOTA_RESERVE

    subscription: str
    tokens: int = Field(ge=0)
    cost_usd: float = Field(ge=0)
    reservation_id: str
    task_id: str | None = None
    model: str | None = None
    ttl_s: int = Field(3600, ge=1)


class ReserveReply(Model):
    """The quota service's answer: accepted, or refused with a reason and when to retry."""

    ok: bool
    reservation_id: str
    subscription: str
    reason: str = ""
    retry_after: Timestamp | None = None
    expires_at: Timestamp | None = None


class ReserveManyRequest(Event):
    """Several reservations in one request (``quota.reserve_many``): each is made as its
    own ``quota.reserve`` would be, and all are ledgered before the reply."""

    subject = subjects.QUOTA_RESERVE_MANY

    reservations: list[ReserveRequest] = Field(min_length=1, max_length=1000)


class ReserveManyReply(Model):
    """One answer per reservation asked for, in the same order."""

    replies: list[ReserveReply]


class ReleaseRequest(Event):
    """Give back a reservation that will not be used (``quota.release``)."""

    subject = subjects.QUOTA_RELEASE

    reservation_id: str


class ReleaseReply(Model):
    """What became of a released reservation (``released``, ``already_released``, …)."""

    reservation_id: str
    status: str


class UsageRequest(Event):
    """Ask for every subscription's use and remaining allowance (``quota.usage``)."""

    subject = subjects.QUOTA_USAGE


class UsageReply(Model):
    """Every subscription's day and month windows: used, reserved, limits, reset time."""

    subscriptions: list[dict[str, Any]]


class QuotaSettled(Event):
    """A reservation was replaced by the run's actual usage."""

    subject = subjects.QUOTA_SETTLED

    reservation_id: str
    subscription: str
    status: str
    reserved_tokens: int = 0
    reserved_cost_usd: float = 0
    actual_tokens: int = 0
    actual_cost_usd: float = 0
    #: the settled amount in integer micro-dollars (``actual_cost_usd`` is derived from it)
    actual_cost_micros: int = 0
    #: the part of it charged at the fallback price for tokens no price was known for
    fallback_cost_micros: int = 0


class QuotaAlert(Event):
    """A subscription crossed a threshold of one of its limits (once per window)."""

    subject = subjects.QUOTA_ALERT

    subscription: str
    window: Literal["day", "month"]
    window_id: str
    metric: Literal["tokens", "usd"]
    threshold_pct: int
    used: float
    limit: float
