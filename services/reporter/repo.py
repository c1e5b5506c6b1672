"""The reporter's read-only queries over the tracker's tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Subquery, Table, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.reporter.usage import COUNTERS, attributed_since, usage_since
from tally.db.partitions import add_months
from tally.db.tables import run_events, run_months, runs, token_usage
from tally.money import micros_to_usd

#: What ``tokens`` can group by.
TOKEN_GROUPS = ("model", "command", "agent", "task", "provider")


def token_group(usage: Subquery, by: str) -> ColumnElement[Any]:
    """The column ``by`` means over :func:`attributed_since` rows (every ``by`` but task)."""
    return {
        "model": usage.c.model,
        "command": usage.c.command,
        "agent": usage.c.agent_id,
        "provider": usage.c.provider,
    }[by]


async def run_span(conn: AsyncConnection, run_id: str) -> tuple[datetime, datetime] | None:
    """When the run's ``run_events`` and ``token_usage`` rows are: every one has ``at`` in
    ``[start, end)``, whole UTC months (``run_months``); None when neither table has a row
    of the run."""
    first, last = (
        await conn.execute(
            select(func.min(run_months.c.month), func.max(run_months.c.month)).where(
                run_months.c.run_id == run_id
            )
        )
    ).one()
    if first is None:
        return None
    end = add_months(last.date(), 1)
    return first, datetime(end.year, end.month, 1, tzinfo=last.tzinfo)


def within(table: Table, span: tuple[datetime, datetime]) -> ColumnElement[bool]:
    """``table``'s rows in ``span``: with the bounds given, Postgres plans only those
    months' partitions (a run id alone says nothing of its time: every one is visited)."""
    return and_(table.c.at >= span[0], table.c.at < span[1])


def _keyed(since: datetime, by: str, workspace: str | None) -> Subquery:
    """The rows a token report sums: the :data:`COUNTERS` and the group's ``key``."""
    if by != "task":
        usage = attributed_since(since, workspace)
        return select(token_group(usage, by).label("key"), *usage.c).subquery("keyed")
    # A task is known from its run only: the window's calls summed per run, then joined.
    usage = usage_since(since, workspace)
    per_run = (
        select(usage.c.run_id, *(func.sum(usage.c[c]).label(c) for c in COUNTERS))
        .group_by(usage.c.run_id)
        .subquery("per_run")
    )
    keyed = select(runs.c.task_id.label("key"), *(per_run.c[c] for c in COUNTERS)).select_from(
        per_run.join(runs, runs.c.run_id == per_run.c.run_id, isouter=True)
    )
    return keyed.subquery("keyed")


class ReportRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def run_workspace(self, run_id: str) -> str | None:
        """The workspace of the run (from its row, else its first event); None if unknown."""
        async with self.engine.connect() as conn:
            found = (
                await conn.execute(select(runs.c.workspace).where(runs.c.run_id == run_id))
            ).scalar()
            if found is None and (span := await run_span(conn, run_id)) is not None:
                found = (
                    await conn.execute(
                        select(run_events.c.workspace)
                        .where(run_events.c.run_id == run_id, within(run_events, span))
                        .limit(1)
                    )
                ).scalar()
        return found

    async def run(self, run_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.run_id == run_id))).first()
        return dict(row._mapping) if row else None

    async def timeline(self, run_id: str) -> list[dict[str, Any]]:
        """The run's events as ``{"kind", "at", "data"}``, worker calls with normalised usage."""
        async with self.engine.connect() as conn:
            span = await run_span(conn, run_id)
            if span is None:
                return []
            rows = (
                await conn.execute(
                    select(run_events, token_usage)
                    # A worker call's usage row has its event's id and run: the run id
                    # lets each partition answer from its run index, where the event id
                    # alone made Postgres hash all of token_usage (linear in its size).
                    .join(
                        token_usage,
                        (token_usage.c.event_id == run_events.c.event_id)
                        & (token_usage.c.run_id == run_events.c.run_id)
                        & within(token_usage, span),
                        isouter=True,
                    )
                    .where(run_events.c.run_id == run_id, within(run_events, span))
                    .order_by(run_events.c.at)
                )
            ).all()
        timeline = []
        for r in rows:
            m = r._mapping
            data = dict(m[run_events.c.detail])
            if m[run_events.c.kind] == "worker_call" and m[token_usage.c.event_id] is not None:
                data["usage"] = {
                    k: m[token_usage.c[k]]
                    for k in (
                        "input_tokens",
                        "output_tokens",
                        "cache_read_tokens",
                        "cache_write_tokens",
                        "reasoning_tokens",
                    )
                }
                micros = m[token_usage.c.cost_micros]
                data["cost_micros"] = micros
                data["cost_usd"] = None if micros is None else micros_to_usd(micros)
                data["cost_known"] = m[token_usage.c.cost_known]
            timeline.append({"kind": m[run_events.c.kind], "at": m[run_events.c.at], "data": data})
        return timeline

    async def token_report(
        self, *, since: datetime, by: str, workspace: str | None = None, limit: int | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """Token use since ``since`` grouped by ``by``: counts by kind, cost and time.

        Returns the ``limit`` groups of highest cost (all if None), highest first, and the
        number of groups there are.
        """
        keyed = _keyed(since, by, workspace)
        sums = [func.sum(keyed.c[c]) for c in COUNTERS]
        stmt = (
            select(
                keyed.c.key,
                *(s.label(c) for s, c in zip(sums, COUNTERS, strict=True)),
                func.count().over().label("groups"),
            )
            .group_by(keyed.c.key)
            .having(func.sum(keyed.c.calls) != 0)
            .order_by(func.sum(keyed.c.cost_micros).desc(), keyed.c.key.asc().nulls_last())
            .limit(limit)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        report = [
            {
                # Postgres sums bigints as numeric: back to plain ints for JSON.
                **{
                    k: int(v or 0)
                    for k, v in r._mapping.items()
                    if k.endswith(("tokens", "calls", "micros"))
                },
                "key": r.key if r.key is not None else "(none)",
                # exact in micros; dollars derived from them (of the priced calls only)
                "cost_usd": micros_to_usd(int(r.cost_micros)),
                "duration_ms": float(r.duration_ms),
            }
            for r in rows
        ]
        return report, rows[0].groups if rows else 0
