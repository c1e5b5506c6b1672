"""Runs whose events arrived but whose ``run.started`` never did.

An agent that crashed before announcing its run, or published under a mistyped run id,
leaves timeline events with no run. Such a run is not "in progress": once its first event
is older than the orphan window it is reported as an orphan (``GET /runs/{id}`` says so,
``tally run show`` prints it, ``tally_orphan_runs`` counts them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.db.tables import run_events, runs
from tally.metrics import ORPHAN_RUNS

RunState = Literal["in_progress", "finished", "waiting_for_start", "orphan"]


def run_state(
    run: dict[str, Any] | None,
    first_event_at: datetime | None,
    now: datetime,
    orphan_after: timedelta,
) -> RunState:
    """What a run is doing, as a person reading its timeline should be told."""
    if run is not None:
        return "finished" if run.get("finished_at") else "in_progress"
    if first_event_at is not None and now - first_event_at > orphan_after:
        return "orphan"
    return "waiting_for_start"


async def count_orphans(engine: AsyncEngine, now: datetime, orphan_after: timedelta) -> int:
    """Runs with events older than the window and no ``runs`` row, over the last week."""
    started = select(runs.c.run_id).where(runs.c.run_id == run_events.c.run_id).exists()
    stmt = select(func.count(func.distinct(run_events.c.run_id))).where(
        run_events.c.at > now - timedelta(days=7),
        run_events.c.at < now - orphan_after,
        ~started,
    )
    async with engine.connect() as conn:
        return int(await conn.scalar(stmt) or 0)


def orphan_gauge(
    engine: AsyncEngine,
    orphan_after: timedelta,
    every_s: float,
    clock: Callable[[], datetime],
) -> Callable[[], Any]:
    """A loop that keeps ``tally_orphan_runs`` current (for the service to supervise)."""

    async def refresh_forever() -> None:
        while True:
            ORPHAN_RUNS.of("reporter").set(await count_orphans(engine, clock(), orphan_after))
            await asyncio.sleep(every_s)

    return refresh_forever
