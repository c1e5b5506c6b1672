"""Token use in a window, read from the rollups.

``token_usage_hourly`` (kept by triggers on ``token_usage``, migration
``0010_report_indexes``) holds every whole UTC hour, a row per run; a window rarely starts
on the hour, so its first part hour is read from ``token_usage`` itself (at most an hour of
rows, through its time index). The two together give exactly what a scan of
``token_usage`` would, in time that grows with the number of runs in the window rather than
with their calls (:func:`usage_since`).

``token_usage_daily`` (migration ``0015_usage_daily``) holds whole UTC days by what the run
is known by (agent, subscription, command) instead of the run: a few rows a day. A report
that needs no more of the run than that reads the part day at a window's start as above,
joined to the runs, and every whole day from it (:func:`attributed_since`): its time grows
with the days of the window, not with its runs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Integer, Subquery, cast, func, literal, select, union_all

from tally.db.tables import assignments, runs, token_usage, token_usage_daily, token_usage_hourly

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


def serial_plan() -> ColumnElement[bool]:
    """Always true; a query holding it is planned without parallel workers.

    A window's rollup rows are a few thousand: Postgres still planned some over two
    workers, whose start (milliseconds, more on a busy machine) cost more than the whole
    read. ``tally_serial_plan()`` is parallel unsafe (migration ``0015_usage_daily``):
    unlike a ``SET LOCAL``, it costs no round trip.
    """
    return func.tally_serial_plan().is_(True)


def next_day(at: datetime) -> datetime:
    """The first UTC midnight at or after ``at`` (the daily rollup's days are UTC days)."""
    at = at.astimezone(UTC)
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    return start if start == at else start + timedelta(days=1)


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


def usage_since(
    since: datetime, workspace: str | None = None, until: datetime | None = None
) -> Subquery:
    """Every worker call since ``since`` (and before ``until``, a whole hour, if given):
    part-hour rows of ``token_usage`` and hourly rollup rows.

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
    ).where(token_usage_hourly.c.hour >= whole, serial_plan())
    if until is not None:
        hours = hours.where(token_usage_hourly.c.hour < until)
    if workspace:
        part = part.where(token_usage.c.workspace == workspace)
        hours = hours.where(token_usage_hourly.c.workspace == workspace)
    return union_all(part, hours).subquery("usage")


#: What :func:`attributed_since` rows are keyed by.
ATTRIBUTES = ("workspace", "model", "provider", "command", "agent_id", "subscription")


def attributed_since(since: datetime, workspace: str | None = None) -> Subquery:
    """Every worker call since ``since`` by what its run is known by: rows of
    :func:`usage_since` up to the first whole UTC day, joined to their run and its
    assignment, then daily rollup rows.

    Columns: the :data:`ATTRIBUTES` (``command`` is the call's, else its run's; ``agent_id``
    and ``subscription`` are None for a run not stored, or without them), the
    :data:`COUNTERS` and ``at`` (a call's time, the start of its hour or of its day: the
    same day buckets, not the same hour buckets).
    """
    first_day = next_day(since)
    part = usage_since(since, workspace, until=first_day)
    joined = select(
        part.c.workspace,
        part.c.model,
        part.c.provider,
        func.coalesce(part.c.command, runs.c.command).label("command"),
        runs.c.agent_id,
        assignments.c.subscription,
        *(part.c[c] for c in COUNTERS),
        part.c.at,
    ).select_from(
        part.join(runs, runs.c.run_id == part.c.run_id, isouter=True).join(
            assignments, assignments.c.assignment_id == runs.c.assignment_id, isouter=True
        )
    )
    d = token_usage_daily.c
    days = select(*(d[k] for k in (*ATTRIBUTES, *COUNTERS)), d.day.label("at")).where(
        d.day >= first_day, serial_plan()
    )
    if workspace:
        days = days.where(d.workspace == workspace)
    return union_all(joined, days).subquery("usage")
