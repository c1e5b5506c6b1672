"""The estimator's queries: it writes estimates and imported history, and reads completed
tasks and every measured duration (imported hours, runs, work-lane times) to learn from."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.estimator.hours import Duration
from services.estimator.points_model import HistoricalTask
from services.estimator.workspace import historical_task
from tally.db import DirectPool
from tally.db.tables import history_tasks, task_status_events, tasks, velocity_logs
from tally.events import TaskEstimated
from tally.events.plans import HistoryRecord

#: The work lane's status: time from entering it to the next status change is work time.
WORK_STATUS = "in_progress"


class EstimatorRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: the batch path's statement (:meth:`save_many`)
        self.direct = DirectPool(engine, max_size=2)

    async def close(self) -> None:
        """Close the batch path's connections (the engine is disposed by its owner)."""
        await self.direct.close()

    async def history(self, workspace: str) -> list[HistoricalTask]:
        """Completed tasks of a workspace, oldest first: imported history, then finished runs.

        Imported rows are ordered by completion date, then by import order, so a history
        without dates keeps the order of its file.
        """
        async with self.engine.connect() as conn:
            imported = (
                await conn.execute(
                    select(history_tasks)
                    .where(history_tasks.c.workspace == workspace)
                    .order_by(history_tasks.c.completed_at.nulls_first(), history_tasks.c.position)
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
                r.model,
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

    async def durations(self, workspace: str) -> list[Duration]:
        """Measured durations besides the history's own ``actual_hours``.

        Runs the learner logged (points, hours, model, type per run) and, for finished
        tasks without a logged run, the time they spent in the work lane.
        """
        async with self.engine.connect() as conn:
            runs = (
                await conn.execute(
                    select(
                        velocity_logs.c.task_id,
                        velocity_logs.c.story_points,
                        velocity_logs.c.actual_hours,
                        velocity_logs.c.model,
                        velocity_logs.c.task_type,
                    ).where(
                        velocity_logs.c.workspace == workspace,
                        velocity_logs.c.story_points.is_not(None),
                    )
                )
            ).all()
            changes = (
                select(
                    task_status_events.c.task_id,
                    task_status_events.c.to_status,
                    task_status_events.c.changed_at,
                    func.lead(task_status_events.c.changed_at)
                    .over(
                        partition_by=task_status_events.c.task_id,
                        order_by=task_status_events.c.changed_at,
                    )
                    .label("left_at"),
                )
                .where(task_status_events.c.workspace == workspace)
                .subquery()
            )
            in_lane = changes.c.left_at - changes.c.changed_at
            lanes = (
                await conn.execute(
                    select(
                        tasks.c.task_id,
                        tasks.c.story_points,
                        (func.sum(func.extract("epoch", in_lane)) / 3600.0).label("hours"),
                        tasks.c.model,
                        tasks.c.task_type,
                    )
                    .join(changes, changes.c.task_id == tasks.c.task_id)
                    .where(
                        tasks.c.workspace == workspace,
                        tasks.c.completed_at.is_not(None),
                        tasks.c.story_points.is_not(None),
                        tasks.c.actual_hours.is_(None),
                        changes.c.to_status == WORK_STATUS,
                        changes.c.left_at.is_not(None),
                    )
                    .group_by(tasks.c.task_id)
                )
            ).all()
        logged = {r.task_id for r in runs}
        out = [
            Duration(r.story_points, r.actual_hours, r.model, r.task_type, r.task_id) for r in runs
        ]
        out += [
            Duration(r.story_points, float(r.hours), r.model, r.task_type, r.task_id)
            for r in lanes
            if r.task_id not in logged and r.hours
        ]
        return out

    async def fingerprint(self, workspace: str) -> tuple[Any, Any]:
        """What changes with the workspace's imported history, and with its measured time.

        Returns:
            ``(imported, measured)``: counts and newest positions, sums or times of
            ``history_tasks``, and of finished ``tasks`` and logged runs.
        """
        parts = [
            select(
                literal("history"),
                func.count(),
                # A re-imported id keeps its position: its points and hours show the change.
                func.max(history_tasks.c.position)
                + func.sum(history_tasks.c.story_points)
                + func.coalesce(func.sum(history_tasks.c.actual_hours), 0),
            ).where(history_tasks.c.workspace == workspace),
            select(
                literal("tasks"),
                func.count(),
                func.max(func.extract("epoch", tasks.c.completed_at)),
            ).where(tasks.c.workspace == workspace, tasks.c.completed_at.is_not(None)),
            select(
                literal("runs"),
                func.count(),
                func.max(func.extract("epoch", velocity_logs.c.at)),
            ).where(velocity_logs.c.workspace == workspace),
        ]
        async with self.engine.connect() as conn:
            rows = (await conn.execute(union_all(*parts))).all()
        found = {str(r[0]): (int(r[1]), float(r[2] or 0)) for r in rows}
        return found["history"], (found["tasks"], found["runs"])

    async def save(self, e: TaskEstimated) -> None:
        """Keep the estimate; a redelivered task keeps its first estimate."""
        await self.save_many([e])

    async def save_many(self, events: Sequence[TaskEstimated]) -> None:
        """Keep a batch of estimates, all or none, in one round trip (asyncpg sends the
        rows and the commit together); a redelivered task keeps its first estimate."""
        if not events:
            return
        rows = json.dumps([_estimate_row(e) for e in events])
        async with self.direct.acquire() as conn:
            await conn.execute(_SAVE_MANY, rows)


#: A batch's estimates as one JSON array (parameter 1), one statement: all or none.
_SAVE_MANY = """
    INSERT INTO estimates (task_id, workspace, event_id, story_points, band, hours_p50,
                           hours_p90, value_score, estimate)
    SELECT task_id, workspace, event_id, story_points, band, hours_p50, hours_p90,
           value_score, estimate
    FROM jsonb_to_recordset($1::jsonb) AS r(
        task_id text, workspace text, event_id text, story_points float8, band text,
        hours_p50 float8, hours_p90 float8, value_score float8, estimate jsonb)
    ON CONFLICT DO NOTHING
"""


def _estimate_row(e: TaskEstimated) -> dict[str, Any]:
    est = e.estimate
    return {
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
