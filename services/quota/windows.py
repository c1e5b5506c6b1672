"""Quota windows: which UTC day and month an instant belongs to, and what a counter means.

Pure functions and dataclasses, no I/O. Window ids are part of the Redis keys
(``d:2026-11-22``, ``m:2026-11``), so a window "rolls over" simply by the clock producing a
new id; the old window's keys expire some time after its end.

Money is counted in integer micro-dollars (1 USD = 1,000,000) wherever it is summed, so
thousands of small costs add up exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from tally.money import MICROS_PER_USD, micros_to_usd, usd_to_micros

Period = Literal["day", "month"]
Metric = Literal["tokens", "usd"]

PERIODS: tuple[Period, ...] = ("day", "month")
METRICS: tuple[Metric, ...] = ("tokens", "usd")
#: Micro-dollars per dollar: Redis counters hold integers, never floats.
MICRO_PER_USD = MICROS_PER_USD


def as_utc(at: datetime) -> datetime:
    """Returns ``at`` in UTC; naive datetimes are refused because their zone is a guess."""
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware instant")
    return at.astimezone(UTC)


def epoch_ms(at: datetime) -> int:
    """Milliseconds since the Unix epoch, the unit the Lua scripts compare."""
    return int(as_utc(at).timestamp() * 1000)


def from_epoch_ms(ms: int) -> datetime:
    """Inverse of :func:`epoch_ms` (UTC)."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def usd_to_micro(usd: float | Decimal) -> int:
    """Converts dollars to integer micro-dollars, rounding half to even (see `tally.money`)."""
    return int(usd_to_micros(usd))


def micro_to_usd(micro: int) -> float:
    """Converts micro-dollars back to dollars for display and events."""
    return float(micros_to_usd(micro))


def window_id(period: Period, at: datetime) -> str:
    """The id of the UTC window containing ``at``: ``d:YYYY-MM-DD`` or ``m:YYYY-MM``.

    >>> window_id("day", datetime(2026, 11, 22, 23, 59, 59, 999000, tzinfo=UTC))
    'd:2026-11-22'
    """
    utc = as_utc(at)
    if period == "day":
        return f"d:{utc:%Y-%m-%d}"
    return f"m:{utc:%Y-%m}"


def window_period(window: str) -> Period:
    """The period of a window id (``"day"`` for ``d:...``, ``"month"`` for ``m:...``)."""
    if window.startswith("d:"):
        return "day"
    if window.startswith("m:"):
        return "month"
    raise ValueError(f"not a window id: {window!r}")


def window_start(window: str) -> datetime:
    """The first instant (UTC) of a window id."""
    period = window_period(window)
    fmt = "%Y-%m-%d" if period == "day" else "%Y-%m"
    return datetime.strptime(window[2:], fmt).replace(tzinfo=UTC)


def window_end(window: str) -> datetime:
    """The rollover instant of a window id: the first instant of the next window."""
    start = window_start(window)
    if window_period(window) == "day":
        return start + timedelta(days=1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def next_rollover(period: Period, at: datetime) -> datetime:
    """When the window of ``period`` containing ``at`` ends (next UTC midnight or 1st)."""
    return window_end(window_id(period, at))


def reached_thresholds(value: int, limit: int | None, thresholds: Iterable[int]) -> list[int]:
    """Thresholds (percent of ``limit``) that ``value`` has reached, in ascending order.

    Integer arithmetic, identical to the Lua scripts: threshold ``t`` is reached when
    ``value * 100 >= t * limit``. Nothing is reached without a limit or at zero usage, so an
    empty window never alerts, not even against a zero limit.
    """
    if limit is None or value <= 0:
        return []
    return sorted(t for t in set(thresholds) if value * 100 >= t * limit)


def crossed_thresholds(
    before: int, after: int, limit: int | None, thresholds: Iterable[int]
) -> list[int]:
    """Thresholds reached at ``after`` but not at ``before`` (a change in usage crossed them)."""
    already = set(reached_thresholds(before, limit, thresholds))
    return [t for t in reached_thresholds(after, limit, thresholds) if t not in already]


def retry_after(blocking: Iterable[tuple[Period, int, int]], now: datetime) -> datetime | None:
    """When a refused request could next fit: once every blocking window has rolled over.

    Args:
        blocking: ``(period, requested, limit)`` for each limit the request would pass.
        now: when the request was refused.

    Returns:
        The latest rollover among the blocking windows, or ``None`` when nothing blocks or
        the request alone is larger than one of the limits (waiting would not help).
    """
    rollovers = []
    for period, requested, limit in blocking:
        if requested > limit:
            return None
        rollovers.append(next_rollover(period, now))
    return max(rollovers, default=None)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """One window's counters and limits. ``None`` limits mean unlimited."""

    period: Period
    window: str
    used_tokens: int
    reserved_tokens: int
    used_micro_usd: int
    reserved_micro_usd: int
    limit_tokens: int | None
    limit_micro_usd: int | None

    @property
    def resets_at(self) -> datetime:
        """When this window rolls over."""
        return window_end(self.window)

    @property
    def committed_tokens(self) -> int:
        """Used plus reserved tokens: what limits and alerts compare against."""
        return self.used_tokens + self.reserved_tokens

    @property
    def committed_micro_usd(self) -> int:
        """Used plus reserved micro-dollars."""
        return self.used_micro_usd + self.reserved_micro_usd

    @property
    def remaining_tokens(self) -> int | None:
        """Tokens still reservable in this window (never negative), ``None`` if unlimited."""
        if self.limit_tokens is None:
            return None
        return max(0, self.limit_tokens - self.committed_tokens)

    @property
    def remaining_micro_usd(self) -> int | None:
        """Micro-dollars still reservable (never negative), ``None`` if unlimited."""
        if self.limit_micro_usd is None:
            return None
        return max(0, self.limit_micro_usd - self.committed_micro_usd)

    @property
    def used_usd(self) -> float:
        return micro_to_usd(self.used_micro_usd)

    @property
    def reserved_usd(self) -> float:
        return micro_to_usd(self.reserved_micro_usd)

    @property
    def limit_usd(self) -> float | None:
        return None if self.limit_micro_usd is None else micro_to_usd(self.limit_micro_usd)

    @property
    def remaining_usd(self) -> float | None:
        remaining = self.remaining_micro_usd
        return None if remaining is None else micro_to_usd(remaining)


@dataclass(frozen=True, slots=True)
class Usage:
    """A subscription's current day and month windows and its freeze switch."""

    subscription: str
    frozen: bool
    day: WindowUsage
    month: WindowUsage


@dataclass(frozen=True, slots=True)
class Alert:
    """A threshold reached for the first time in a window; published as ``quota.alert``.

    ``value`` and ``limit`` are in the metric's unit: tokens, or micro-dollars for ``usd``.
    """

    subscription: str
    period: Period
    window: str
    metric: Metric
    threshold: int
    value: int
    limit: int


@dataclass(frozen=True, slots=True)
class WindowCounters:
    """Used totals of one window, as recomputed from the ledger to rebuild Redis."""

    subscription: str
    window: str
    used_tokens: int
    used_micro_usd: int
