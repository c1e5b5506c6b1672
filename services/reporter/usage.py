"""Token use in a window, read mostly from the hourly rollup.

``token_usage_hourly`` (kept by triggers on ``token_usage``, migration
``0010_report_indexes``) holds every whole UTC hour; a window rarely starts on the hour, so
its first part hour is read from ``token_usage`` itself (at most an hour of rows, through
its time index). The two together give exactly what a scan of ``token_usage`` would, in
time that grows with the number of runs in the window rather than with their calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Integer, Subquery, cast, func, literal, select, union_all

from tally.db.tables import token_usage, token_usage_hourly

#: The figures both sources give, in this order.
COUNTERS = (
    "calls",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_micros",
    "unpriced_calls",
    "duration_ms",
)
#: What a row of ``token_usage`` is keyed by in the rollup.
KEYS = ("workspace", "run_id", "model", "provider", "command")


def next_hour(at: datetime) -> datetime:
    """The first whole UTC hour at or after ``at`` (the rollup's hours are UTC hours)."""
    at = at.astimezone(UTC)
    start = at.replace(minute=0, second=0, microsecond=0)
    return start if start == at else start + timedelta(hours=1)


def _raw(column: str) -> ColumnElement[object]:
    t = token_usage.c
    if column == "calls":
        return literal(1, Integer)
    if column == "unpriced_calls":
        return cast(~t.cost_known, Integer)
    if column == "cost_micros":
        return func.coalesce(t.cost_micros, 0)
    if column == "duration_ms":
        return func.coalesce(t.duration_ms, 0.0)
    return t[column]


def usage_since(since: datetime, workspace: str | None = None) -> Subquery:
    """Every worker call since ``since``: part-hour rows of ``token_usage`` and rollup rows.

    Columns: ``workspace, run_id, model, provider, command``, the :data:`COUNTERS`
    (summed over the calls a row stands for) and ``at`` (a call's time, or the start of
    the hour a rollup row sums: the same hour and day buckets). Sum them grouped as a
    report needs.
    """
    whole = next_hour(since)
    part = select(
        *(token_usage.c[k] for k in KEYS),
        *(_raw(c).label(c) for c in COUNTERS),
        token_usage.c.at.label("at"),
    ).where(token_usage.c.at >= since, token_usage.c.at < whole)
    hours = select(
        *(token_usage_hourly.c[k] for k in (*KEYS, *COUNTERS)),
        token_usage_hourly.c.hour.label("at"),
    ).where(token_usage_hourly.c.hour >= whole)
    if workspace:
        part = part.where(token_usage.c.workspace == workspace)
        hours = hours.where(token_usage_hourly.c.workspace == workspace)
    return union_all(part, hours).subquery("usage")
