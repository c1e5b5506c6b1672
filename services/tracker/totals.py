"""A finished run's totals: hours, tokens by kind, cost, estimation error, velocity."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from tally.events import TokenTotals
from tally.money import micros_to_usd


@dataclass(frozen=True)
class UsageRow:
    """One persisted worker call's usage."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    #: None when no price was known for the call's model (``cost_known`` false)
    cost_micros: int | None


@dataclass(frozen=True)
class SubtaskMark:
    """A subtask_started or subtask_completed event."""

    subtask: str
    at: datetime
    completed: bool
    quality: float | None = None


@dataclass(frozen=True)
class RunTotals:
    actual_hours: float
    subtask_hours: dict[str, float]
    tokens: TokenTotals
    #: the priced calls' cost, exactly; calls without a price are in ``unpriced``
    cost_micros: int
    estimation_error: float | None
    velocity: float | None
    quality_score: float | None
    worker_calls: int
    #: tokens of the calls no price was known for (quota prices them at its fallback)
    unpriced: TokenTotals = field(default_factory=TokenTotals)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cost_usd(self) -> float:
        """``cost_micros`` in dollars, for events and people."""
        return float(micros_to_usd(self.cost_micros))


def subtask_hours(marks: Iterable[SubtaskMark]) -> dict[str, float]:
    """Hours per subtask, from its first start to its last completion (re-runs included)."""
    first: dict[str, datetime] = {}
    last: dict[str, datetime] = {}
    for m in sorted(marks, key=lambda m: m.at):
        if not m.completed:
            first.setdefault(m.subtask, m.at)
        else:
            last[m.subtask] = m.at
    return {
        name: round((last[name] - start).total_seconds() / 3600, 6)
        for name, start in first.items()
        if name in last and last[name] >= start
    }


def run_totals(
    *,
    started_at: datetime,
    finished_at: datetime,
    usage: Sequence[UsageRow],
    marks: Sequence[SubtaskMark],
    story_points: float | None,
    estimated_hours: float | None,
    review_score: float | None,
) -> RunTotals:
    """Compute a run's totals.

    ``estimation_error`` is (actual - estimated) / estimated hours: +0.5 means the run took
    half again as long as estimated. ``velocity`` is story points per actual hour.
    ``quality_score`` is the review score when given, else the mean subtask quality.
    """
    hours = max((finished_at - started_at).total_seconds(), 0.0) / 3600
    tokens = token_totals(usage)
    qualities = [m.quality for m in marks if m.completed and m.quality is not None]
    quality = (
        review_score
        if review_score is not None
        else (sum(qualities) / len(qualities) if qualities else None)
    )
    error = (hours - estimated_hours) / estimated_hours if estimated_hours else None
    velocity = story_points / hours if story_points and hours > 0 else None
    return RunTotals(
        actual_hours=round(hours, 6),
        subtask_hours=subtask_hours(marks),
        tokens=tokens,
        cost_micros=sum(u.cost_micros for u in usage if u.cost_micros is not None),
        estimation_error=round(error, 6) if error is not None else None,
        velocity=round(velocity, 6) if velocity is not None else None,
        quality_score=quality,
        worker_calls=len(usage),
        unpriced=token_totals([u for u in usage if u.cost_micros is None]),
    )


def token_totals(usage: Sequence[UsageRow]) -> TokenTotals:
    """Tokens of ``usage`` summed by kind."""
    return TokenTotals(
        input_tokens=sum(u.input_tokens for u in usage),
        output_tokens=sum(u.output_tokens for u in usage),
        cache_read_tokens=sum(u.cache_read_tokens for u in usage),
        cache_write_tokens=sum(u.cache_write_tokens for u in usage),
        reasoning_tokens=sum(u.reasoning_tokens for u in usage),
    )
