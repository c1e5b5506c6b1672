"""The estimator's queries: it writes estimates and imported history, and reads completed
tasks and velocity logs to learn from."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.estimator.points import HistoricalTask
from services.estimator.workspace import historical_task
from tally.db.tables import estimates, history_tasks, tasks, velocity_logs
from tally.events import TaskEstimated
from tally.events.plans import HistoryRecord


class EstimatorRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def history(self, workspace: str) -> list[HistoricalTask]:
        """Completed tasks of a workspace, oldest first: imported history, then finished runs."""
        async with self.engine.connect() as conn:
            imported = (
                await conn.execute(
                    select(history_tasks)
                    .where(history_tasks.c.workspace == workspace)
                    .order_by(history_tasks.c.completed_at.nulls_first(), history_tasks.c.task_id)
                )
            ).all()
            done = (
                await conn.execute(
                    select(tasks)
                    .where(
                        tasks.c.workspace == workspace,
                        tasks.c.completed_at.is_not(None),
                        tasks.c.story_points.is_not(None),
                    )
                    .order_by(tasks.c.completed_at)
                )
            ).all()
        out = [historical_task(r) for r in imported]
        out += [
            HistoricalTask(
                r.task_id,
                r.title,
                r.description,
                r.story_points,
                r.task_type,
                tuple(r.labels),
                r.actual_hours,
            )
            for r in done
        ]
        return out

    async def import_history(self, workspace: str, records: Sequence[HistoryRecord]) -> int:
        """Store completed tasks in a workspace's history; a re-imported id replaces its row.

        Returns:
            The workspace's history size after the import.
        """
        rows = [{"workspace": workspace, **r.model_dump()} for r in records]
        stmt = insert(history_tasks)
        replace = {c: stmt.excluded[c] for c in rows[0] if c not in ("workspace", "task_id")}
        async with self.engine.begin() as conn:
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["workspace", "task_id"], set_=replace),
                rows,
            )
            size = await conn.scalar(
                select(func.count())
                .select_from(history_tasks)
                .where(history_tasks.c.workspace == workspace)
            )
        return int(size or 0)

    async def velocity_samples(
        self, workspace: str
    ) -> dict[tuple[str | None, str | None], list[float]]:
        """Measured points per hour from the learner's velocity logs.

        Pooled at every level the velocity model falls back through: (model, type),
        (model, any type), (any model, type) and the whole workspace (None, None).
        """
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        velocity_logs.c.model, velocity_logs.c.task_type, velocity_logs.c.velocity
                    ).where(
                        velocity_logs.c.workspace == workspace,
                        velocity_logs.c.velocity.is_not(None),
                    )
                )
            ).all()
        samples: dict[tuple[str | None, str | None], list[float]] = defaultdict(list)
        for r in rows:
            for key in {
                (r.model, r.task_type),
                (r.model, None),
                (None, r.task_type),
                (None, None),
            }:
                samples[key].append(r.velocity)
        return dict(samples)

    async def save(self, e: TaskEstimated) -> None:
        """Keep the estimate; a redelivered task keeps its first estimate."""
        est = e.estimate
        row: dict[str, Any] = {
            "task_id": e.task_id,
            "workspace": e.workspace,
            "event_id": e.event_id,
            "story_points": est.story_points,
            "band": est.band,
            "hours_p50": est.hours_p50,
            "hours_p90": est.hours_p90,
            "value_score": est.value_score,
            "estimate": est.model_dump(mode="json"),
        }
        async with self.engine.begin() as conn:
            await conn.execute(insert(estimates).on_conflict_do_nothing(), row)
