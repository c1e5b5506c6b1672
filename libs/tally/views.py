"""How clients show a task's assignment or deferral: one shape for the reporter's API and
the CLI's ``--json`` (money as exact micro-dollars beside a display string)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, computed_field

from tally.events import TaskAssigned, TaskDeferred
from tally.moneyview import Micros, UsdText, micros, usd_string


class Assignment(BaseModel):
    """A model chosen for the task, and the quota reserved for it."""

    assignment_id: str
    model: str
    provider: str
    subscription: str
    strategy: str
    reason: str
    runner_up: str | None
    attempt: int
    arm: str | None
    reservation_id: str
    reserved_tokens: int
    reserved_micros: Micros
    expires_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reserved_usd(self) -> UsdText:
        return usd_string(self.reserved_micros)

    @classmethod
    def of_event(cls, a: TaskAssigned) -> Assignment:
        r = a.reservation
        return cls(
            assignment_id=a.assignment_id,
            model=a.model,
            provider=a.provider,
            subscription=a.subscription,
            strategy=a.strategy,
            reason=a.reason,
            runner_up=a.runner_up,
            attempt=a.attempt,
            arm=a.arm,
            reservation_id=r.reservation_id,
            reserved_tokens=r.tokens,
            reserved_micros=micros(r.cost_usd),
            expires_at=r.expires_at,
        )


class Deferral(BaseModel):
    """No model fitted within quota: the assigner tries again after ``retry_after``."""

    reason: str
    retry_after: datetime | None
    attempt: int

    @classmethod
    def of_event(cls, d: TaskDeferred) -> Deferral:
        return cls(reason=d.reason, retry_after=d.retry_after, attempt=d.attempt)
