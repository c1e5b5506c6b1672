"""``GET /dashboard/series`` and ``GET /workspaces``: what a chart of a window needs.

The series splits a window into hours or days and gives each its runs, its tokens by kind
(input, output, cache read, cache write, reasoning: never summed into one figure) and its
spend; beside it, spend by subscription (through the assignment each run was given) and
the share of assignments each model won (what the routing chose in the window).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, and_, func, literal, select, union
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.errors import bad_parameter
from services.reporter.params import Params, Since, Workspace, window_start
from services.reporter.usage import attributed_since, usage_since
from tally.db.tables import assignments, runs, tasks
from tally.moneyview import Micros

#: The most buckets one answer holds (an hourly series of ~7 months).
MAX_BUCKETS = 5000
KINDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
Bucket = Literal["hour", "day"]


class SeriesPoint(BaseModel):
    """One hour or day of the window (``start`` in UTC)."""

    start: datetime
    runs_finished: int
    runs_succeeded: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    spend_micros: Micros
    #: calls whose model had no known price (their cost is not in ``spend_micros``)
    unpriced_calls: int


class SubscriptionSpend(BaseModel):
    #: ``(none)`` for runs given no assignment (published without one)
    subscription: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    spend_micros: Micros


class ModelShare(BaseModel):
    model: str
    assignments: int
    share: float


class Series(BaseModel):
    workspace: str | None
    since: datetime
    now: datetime
    bucket: Bucket
    points: list[SeriesPoint]
    by_subscription: list[SubscriptionSpend]
    routing: list[ModelShare]


class SeriesParams(Params):
    since: Since = "7d"
    workspace: Workspace | None = None
    bucket: Bucket | None = Field(None, description="hour or day (default: hour up to 2 days).")


class Workspaces(BaseModel):
    workspaces: list[str]


def bucket_starts(since: datetime, now: datetime, bucket: Bucket) -> list[datetime]:
    """The start of every bucket from the one holding ``since`` to the one holding ``now``.

    >>> [d.hour for d in bucket_starts(datetime(2026, 1, 1, 9, 30, tzinfo=UTC),
    ...                                 datetime(2026, 1, 1, 11, 5, tzinfo=UTC), "hour")]
    [9, 10, 11]
    """
    since = since.astimezone(UTC)
    step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    first = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        first = first.replace(hour=0)
    starts = []
    at = first
    while at <= now:
        starts.append(at)
        at += step
    return starts


def _scoped(column: Any, workspace: str | None, *more: ColumnElement[bool]) -> Any:
    return and_(*more, column == workspace) if workspace else and_(*more)


async def series(
    engine: AsyncEngine, since: datetime, now: datetime, workspace: str | None, bucket: Bucket
) -> Series:
    # Token use by day from the daily rollup (a few rows a day, whatever the number of
    # runs); by hour from the hourly one (a row per run and hour). Spend by subscription
    # needs no hour: the daily rollup holds each run's under its assignment's.
    days = attributed_since(since, workspace)
    u = days if bucket == "day" else usage_since(since, workspace)
    use_at = func.date_trunc(bucket, u.c.at, "UTC")
    run_at = func.date_trunc(bucket, runs.c.finished_at, "UTC")
    used_stmt = select(
        use_at.label("start"),
        *(func.sum(u.c[k]).label(k) for k in KINDS),
        func.coalesce(func.sum(u.c.cost_micros), 0).label("spend"),
        func.sum(u.c.unpriced_calls).label("unpriced"),
    ).group_by(use_at)
    runs_stmt = (
        select(
            run_at.label("start"),
            func.count().label("n"),
            func.count().filter(runs.c.success.is_(True)).label("ok"),
        )
        .where(_scoped(runs.c.workspace, workspace, runs.c.finished_at >= since))
        .group_by(run_at)
    )
    subscription = func.coalesce(days.c.subscription, literal("(none)"))
    subs_stmt = (
        select(
            subscription.label("subscription"),
            func.sum(days.c.calls).label("calls"),
            *(func.sum(days.c[k]).label(k) for k in KINDS),
            func.coalesce(func.sum(days.c.cost_micros), 0).label("spend"),
        )
        .group_by(subscription)
        # a run's calls all moved to another subscription leave rows of none behind
        .having(func.sum(days.c.calls) != 0)
        .order_by(func.sum(days.c.cost_micros).desc())
    )
    share_stmt = (
        select(assignments.c.model, func.count().label("n"))
        .where(_scoped(assignments.c.workspace, workspace, assignments.c.created_at >= since))
        .group_by(assignments.c.model)
        .order_by(func.count().desc(), assignments.c.model)
    )
    async with engine.connect() as conn:
        used = {r.start: r for r in (await conn.execute(used_stmt)).all()}
        done = {r.start: r for r in (await conn.execute(runs_stmt)).all()}
        subs = (await conn.execute(subs_stmt)).all()
        shares = (await conn.execute(share_stmt)).all()
    points = []
    starts = bucket_starts(since, now, bucket)
    # Rows stamped after ``now`` (an agent's clock ahead) keep their buckets too, so every
    # token the totals count is in the series.
    starts += sorted(k for k in {*used, *done} if k > starts[-1])
    for start in starts:
        t, r = used.get(start), done.get(start)
        points.append(
            SeriesPoint(
                start=start,
                runs_finished=r.n if r else 0,
                runs_succeeded=r.ok if r else 0,
                **{k: int(getattr(t, k) or 0) if t else 0 for k in KINDS},
                spend_micros=int(t.spend) if t else 0,
                unpriced_calls=int(t.unpriced) if t else 0,
            )
        )
    total = sum(s.n for s in shares)
    return Series(
        workspace=workspace,
        since=since,
        now=now,
        bucket=bucket,
        points=points,
        by_subscription=[
            SubscriptionSpend(
                subscription=s.subscription,
                calls=int(s.calls),
                **{k: int(getattr(s, k) or 0) for k in KINDS},
                spend_micros=int(s.spend),
            )
            for s in subs
        ],
        routing=[ModelShare(model=s.model, assignments=s.n, share=s.n / total) for s in shares],
    )


def series_router(engine: AsyncEngine) -> APIRouter:
    router = APIRouter(tags=["dashboard"])

    @router.get("/dashboard/series", response_model=Series)
    async def dashboard_series(q: Annotated[SeriesParams, Query()], who: ReportsRead) -> Series:
        """Runs, tokens by kind and spend per hour or day of the window; spend by
        subscription; the share of assignments each model won."""
        now = datetime.now(UTC)
        since = window_start("since", q.since, now, future_ok=False)
        bucket: Bucket = q.bucket or ("hour" if now - since <= timedelta(days=2) else "day")
        step = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
        if (now - since) / step > MAX_BUCKETS:
            raise bad_parameter(
                "since", f"more than {MAX_BUCKETS} {bucket}s back: use a later start"
            )
        return await series(engine, since, now, who.workspace_for(q.workspace), bucket)

    @router.get("/workspaces", response_model=Workspaces)
    async def workspace_list(q: Annotated[Params, Query()], who: ReportsRead) -> Workspaces:
        """The workspaces this token sees: every one with a task or a run for an operator."""
        if not who.operator:
            return Workspaces(workspaces=[who.workspace])
        names = union(select(tasks.c.workspace), select(runs.c.workspace)).subquery()
        async with engine.connect() as conn:
            found = await conn.execute(select(names.c.workspace).order_by(names.c.workspace))
            return Workspaces(workspaces=list(found.scalars()))

    return router
