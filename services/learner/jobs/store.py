"""Learning jobs in Postgres: rows, claims, fenced progress, checkpoints, data.

A worker *claims* a job by moving its ``epoch`` on; every later write of that worker
(progress, checkpoints, the end) names the epoch it claimed and changes nothing once
another worker has claimed the job since. An iteration's progress, trainer state and
checkpoint are written in one transaction: a worker killed at any moment leaves either
the iteration entirely done or not at all, and a resumed job starts after the last one
written — no iteration is counted twice.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncEngine

from services.learner.checkpoints import Checkpoint
from services.learner.jobs.engine import RecordedRun
from services.learner.policy_store import learned_run
from tally.db import autocommit
from tally.db.tables import (
    learner_propensities,
    learner_runs,
    learning_checkpoints,
    learning_job_runs,
    learning_jobs,
)

#: Statuses a worker may write progress in.
ACTIVE = ("running", "evaluating")

J = learning_jobs.c


class JobStore:
    """The learner's learning-job tables."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(self, row: dict[str, Any]) -> Row[Any]:
        async with self.engine.begin() as conn:
            stmt = insert(learning_jobs).values(**row).returning(learning_jobs)
            created: Row[Any] = (await conn.execute(stmt)).one()
            return created

    async def get(self, job_id: str) -> Row[Any] | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(learning_jobs).where(J.job_id == job_id))).first()

    async def jobs(self, workspace: str, status: str | None, limit: int) -> builtins.list[Row[Any]]:
        stmt = select(learning_jobs).order_by(J.created_at.desc(), J.job_id).limit(limit)
        if workspace != "*":
            stmt = stmt.where(J.workspace == workspace)
        if status:
            stmt = stmt.where(J.status == status)
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    async def queued_before(self, at: datetime) -> builtins.list[Any]:
        """Jobs still queued that were created before ``at`` (to queue them again)."""
        async with self.engine.connect() as conn:
            stmt = select(J.job_id, J.workspace, J.priority).where(
                J.status == "queued", J.created_at < at
            )
            return list((await conn.execute(stmt)).all())

    async def counts(self) -> dict[str, int]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(select(J.status, func.count()).group_by(J.status))
            return {r[0]: int(r[1]) for r in rows}

    async def claim(self, job_id: str, worker: str, stale_after_s: float) -> Row[Any] | str:
        """Take a queued job, or an active one whose worker fell silent (no write for
        ``stale_after_s``): a new epoch, status running.

        Returns:
            The job's row, or why not: ``over`` (unknown, finished, or cancelled while
            queued: it ends here, cancelled) or ``busy`` (a live worker has it).
        """
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    select(learning_jobs, func.now().label("now"))
                    .where(J.job_id == job_id)
                    .with_for_update()
                )
            ).first()
            if row is None or row.status not in ("queued", *ACTIVE):
                return "over"
            if row.status == "queued" and row.cancel_requested:
                await conn.execute(
                    update(learning_jobs)
                    .where(J.job_id == job_id)
                    .values(status="cancelled", finished_at=func.now())
                )
                return "over"
            silent = (row.now - (row.heartbeat_at or row.now)).total_seconds()
            if row.status != "queued" and silent < stale_after_s:
                return "busy"
            claimed: Row[Any] = (
                await conn.execute(
                    update(learning_jobs)
                    .where(J.job_id == job_id)
                    .values(
                        epoch=J.epoch + 1,
                        status="running",
                        worker=worker,
                        heartbeat_at=func.now(),
                        started_at=func.coalesce(J.started_at, func.now()),
                    )
                    .returning(learning_jobs)
                )
            ).one()
            return claimed

    def _mine(self, job_id: str, epoch: int) -> Any:
        return and_(J.job_id == job_id, J.epoch == epoch, J.status.in_(ACTIVE))

    async def set_status(self, job_id: str, epoch: int, status: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(learning_jobs)
                .where(self._mine(job_id, epoch))
                .values(status=status, heartbeat_at=func.now())
            )
            return bool(done.rowcount)

    async def save_iteration(
        self,
        job_id: str,
        epoch: int,
        values: dict[str, Any],
        checkpoint: dict[str, Any] | None = None,
        retain: Callable[[Sequence[Checkpoint]], Sequence[Checkpoint]] | None = None,
    ) -> bool | None:
        """Write one iteration (and its checkpoint) if the job is still this worker's.

        Returns:
            None if another worker claimed it (or it ended), else whether a cancel was
            asked for.
        """
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(learning_jobs)
                    .where(self._mine(job_id, epoch))
                    .values(**values, heartbeat_at=func.now())
                    .returning(J.cancel_requested)
                )
            ).first()
            if row is None:
                return None
            if checkpoint is not None and retain is not None:
                await conn.execute(insert(learning_checkpoints).values(job_id=job_id, **checkpoint))
                rows = (
                    await conn.execute(
                        select(
                            learning_checkpoints.c.id,
                            learning_checkpoints.c.created_at,
                            learning_checkpoints.c.score,
                        ).where(learning_checkpoints.c.job_id == job_id)
                    )
                ).all()
                items = [Checkpoint(str(r.id), r.created_at, r.score) for r in rows]
                kept = {c.id for c in retain(items)}
                dropped = [int(c.id) for c in items if c.id not in kept]
                if dropped:
                    await conn.execute(
                        delete(learning_checkpoints).where(learning_checkpoints.c.id.in_(dropped))
                    )
            return bool(row.cancel_requested)

    async def finish(self, job_id: str, epoch: int, status: str, **values: Any) -> bool:
        """End the job (``completed``, ``failed``, ``cancelled``) if it is still this worker's."""
        async with self.engine.begin() as conn:
            done = await conn.execute(
                update(learning_jobs)
                .where(self._mine(job_id, epoch))
                .values(status=status, finished_at=func.now(), heartbeat_at=func.now(), **values)
            )
            return bool(done.rowcount)

    async def request_cancel(self, job_id: str) -> Row[Any] | None:
        """Ask a job to stop: a queued one is cancelled now, a running one at its next
        iteration. A job already over is returned unchanged."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(learning_jobs)
                .where(J.job_id == job_id, J.status == "queued")
                .values(status="cancelled", finished_at=func.now(), cancel_requested=True)
            )
            await conn.execute(
                update(learning_jobs)
                .where(J.job_id == job_id, J.status.in_(ACTIVE))
                .values(cancel_requested=True)
            )
            return (await conn.execute(select(learning_jobs).where(J.job_id == job_id))).first()

    async def set_promoted(self, job_id: str, promoted: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                update(learning_jobs).where(J.job_id == job_id).values(promoted=promoted)
            )

    async def checkpoints(self, job_id: str) -> builtins.list[Row[Any]]:
        c = learning_checkpoints.c
        async with self.engine.connect() as conn:
            stmt = select(learning_checkpoints).where(c.job_id == job_id).order_by(c.iteration)
            return list((await conn.execute(stmt)).all())

    # -- data ------------------------------------------------------------------------------
    async def recorded_runs(
        self, workspace: str, since: datetime, until: datetime
    ) -> list[RecordedRun]:
        """The workspace's runs that finished in ``[since, until)``, with the propensity
        the assigner logged for each (by task and attempt)."""
        r, p = learner_runs.c, learner_propensities.c
        stmt = (
            select(learner_runs, p.propensity, p.model.label("assigned_model"))
            .outerjoin(learner_propensities, and_(p.task_id == r.task_id, p.attempt == r.attempt))
            .where(r.workspace == workspace, r.at >= since, r.at < until)
            .order_by(r.at, r.run_id)
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [
            RecordedRun(
                learned_run(row),
                bool(row.success),
                int(row.tokens),
                float(row.quality),
                row.signals,
                # A propensity is of the model assigned: a run of another model has none.
                row.propensity if row.assigned_model == row.model else None,
            )
            for row in rows
        ]

    async def save_job_runs(self, job_id: str, rows: Iterable[dict[str, Any]]) -> None:
        """The runs a job learns from, with their rewards and advantages (once)."""
        items = [{"job_id": job_id, **row} for row in rows]
        if not items:
            return
        async with self.engine.begin() as conn:
            await conn.execute(insert(learning_job_runs).on_conflict_do_nothing(), items)

    async def save_propensity(self, row: dict[str, Any]) -> None:
        await self.save_propensities([row])

    async def save_propensities(self, rows: Sequence[dict[str, Any]]) -> None:
        """Assignments' propensities, kept once each (all of them or none)."""
        if not rows:
            return
        # One round trip: asyncpg sends the rows and the commit together, all or none.
        async with autocommit(self.engine) as conn:
            await conn.execute(insert(learner_propensities).on_conflict_do_nothing(), list(rows))
