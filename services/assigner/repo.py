"""The assigner's queries: it is the only writer of ``assignments``, ``assigner_tasks`` and
``experiments``; it reads the quota ledger to know a reservation was settled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.db import DirectPool, autocommit
from tally.db.tables import assigner_tasks, assignments, experiments, quota_ledger
from tally.events import TaskAssigned, TaskEstimated
from tally.events.assign import Experiment


@dataclass(frozen=True)
class TaskState:
    """What the assigner remembers of a task."""

    estimated: TaskEstimated
    status: str
    attempt: int
    failed_models: tuple[str, ...]


class AssignmentRepo:
    """The assigner's rows; tasks and experiments are kept per installation ``namespace``."""

    def __init__(self, engine: AsyncEngine, namespace: str = "") -> None:
        self.engine = engine
        self.namespace = namespace
        #: the batch path's two statements (:meth:`known`, :meth:`record`)
        self.direct = DirectPool(engine)

    async def close(self) -> None:
        """Close the batch path's connections (the engine is disposed by its owner)."""
        await self.direct.close()

    async def save(self, a: TaskAssigned) -> TaskAssigned:
        """Record an assignment unless one with its id exists; return the one kept.

        The first stored assignment wins: a concurrent attempt at the same assignment gets
        the stored one back (and must give up its own reservation).
        """
        async with self.engine.begin() as conn:
            inserted = await conn.execute(
                insert(assignments).on_conflict_do_nothing().returning(assignments.c.detail),
                _assignment_row(a),
            )
            if inserted.first() is not None:
                return a
        stored = await self.assigned(a.assignment_id)
        if stored is None:  # pragma: no cover - rows are never deleted
            raise RuntimeError(f"assignment {a.assignment_id} vanished")
        return stored

    async def assigned(self, assignment_id: str) -> TaskAssigned | None:
        """The assignment already made under ``assignment_id``, as it was announced."""
        stmt = select(assignments.c.detail).where(assignments.c.assignment_id == assignment_id)
        async with autocommit(self.engine) as conn:
            detail = await conn.scalar(stmt)
        return None if detail is None else TaskAssigned.model_validate(detail)

    async def set_task(
        self,
        e: TaskEstimated,
        status: str,
        attempt: int,
        *,
        failed_models: tuple[str, ...] = (),
        reason: str = "",
        retry_after: datetime | None = None,
    ) -> None:
        """Remember a task's estimate and where it stands (assigned, deferred, exhausted).

        A later attempt is never overwritten by an earlier one (a late redelivery).
        """
        row = self.task_row(
            e,
            status,
            attempt,
            failed_models=failed_models,
            reason=reason,
            retry_after=retry_after,
        )
        async with self.engine.begin() as conn:
            await conn.execute(_UPSERT_TASK, [row])

    def task_row(
        self,
        e: TaskEstimated,
        status: str,
        attempt: int,
        *,
        failed_models: tuple[str, ...] = (),
        reason: str = "",
        retry_after: datetime | None = None,
    ) -> dict[str, Any]:
        """The ``assigner_tasks`` row of a task (see :meth:`set_task`)."""
        return {
            "namespace": self.namespace,
            "task_id": e.task_id,
            "workspace": e.workspace,
            "status": status,
            "attempt": attempt,
            "estimated": e.model_dump(mode="json"),
            "value_score": e.estimate.value_score,
            "failed_models": list(failed_models),
            "reason": reason,
            "retry_after": retry_after,
            "tries": 1 if status == "deferred" else 0,
        }

    async def known(self, task_ids: Sequence[str]) -> set[str]:
        """Which of ``task_ids`` the assigner has met before: a task it remembers, or one
        with a first assignment stored (a crash between storing it and the task)."""
        ids = list(task_ids)
        async with self.direct.acquire() as conn:  # one round trip: no BEGIN, no ROLLBACK
            rows = await conn.fetch(_KNOWN, self.namespace, ids, [f"{i}-a1" for i in ids])
        return {row[0] for row in rows}

    async def record(
        self, assigned: Sequence[TaskAssigned], tasks: Sequence[dict[str, Any]]
    ) -> set[str]:
        """Store a batch's assignments (the first stored under an id wins) and its tasks'
        rows (:meth:`task_row`) together: one statement, so one round trip and one commit
        for the batch, and either all of it is stored or none.

        Returns:
            The ids of the assignments stored by this call.
        """
        stored = json.dumps([_assignment_row(a) for a in assigned])
        rows = json.dumps(list(tasks), default=_json_default)
        async with self.direct.acquire() as conn:
            return {row[0] for row in await conn.fetch(_RECORD, stored, rows)}

    async def task(self, task_id: str) -> TaskState | None:
        async with autocommit(self.engine) as conn:
            row = (
                await conn.execute(
                    select(assigner_tasks).where(
                        assigner_tasks.c.namespace == self.namespace,
                        assigner_tasks.c.task_id == task_id,
                    )
                )
            ).first()
        return None if row is None else _state(row)

    async def deferred(self, *, limit: int, due_by: datetime | None = None) -> list[TaskState]:
        """Deferred tasks, most valuable first; only those due by ``due_by`` if given."""
        t = assigner_tasks.c
        stmt = select(assigner_tasks).where(t.namespace == self.namespace, t.status == "deferred")
        if due_by is not None:
            stmt = stmt.where(or_(t.retry_after.is_(None), t.retry_after <= due_by))
        stmt = stmt.order_by(t.value_score.desc(), t.updated_at).limit(limit)
        async with self.engine.connect() as conn:
            return [_state(r) for r in await conn.execute(stmt)]

    async def assignment_for(self, reservation_id: str | None, task_id: str) -> Any:
        """The assignment a run worked under: by its reservation, else the task's latest."""
        a = assignments.c
        stmt = select(assignments).where(a.task_id == task_id)
        if reservation_id:
            stmt = stmt.where(a.reservation_id == reservation_id)
        async with self.engine.connect() as conn:
            return (await conn.execute(stmt.order_by(a.attempt.desc()).limit(1))).first()

    async def reservation_settled(self, reservation_id: str) -> bool | None:
        """Whether the quota ledger has settled a reservation (``None``: never reserved)."""
        q = quota_ledger.c
        stmt = select(q.op).where(q.reservation_id == reservation_id)
        async with self.engine.connect() as conn:
            ops = set((await conn.execute(stmt)).scalars())
        if not ops:
            return None
        return "settle" in ops

    async def save_experiment(self, e: Experiment) -> bool:
        """Store a new experiment; False if the name is taken."""
        stmt = (
            insert(experiments)
            .values(
                namespace=self.namespace,
                name=e.name,
                task_type=e.task_type,
                variants=[v.model_dump(mode="json") for v in e.variants],
                active=True,
            )
            .on_conflict_do_nothing()
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def stop_experiment(self, name: str) -> bool:
        x = experiments.c
        stmt = (
            update(experiments)
            .where(x.namespace == self.namespace, x.name == name)
            .values(active=False)
        )
        async with self.engine.begin() as conn:
            return bool((await conn.execute(stmt)).rowcount)

    async def experiments(self) -> list[Experiment]:
        async with self.engine.connect() as conn:
            x = experiments.c
            rows = await conn.execute(
                select(experiments).where(x.namespace == self.namespace).order_by(x.created_at)
            )
            return [
                Experiment(
                    name=r.name,
                    task_type=r.task_type,
                    variants=r.variants,
                    active=r.active,
                    created_at=r.created_at,
                )
                for r in rows
            ]


def _assignment_row(a: TaskAssigned) -> dict[str, Any]:
    return {
        "assignment_id": a.assignment_id,
        "task_id": a.task_id,
        "workspace": a.workspace,
        "model": a.model,
        "subscription": a.subscription,
        "strategy": a.strategy,
        "reservation_id": a.reservation.reservation_id,
        "attempt": a.attempt,
        "arm": a.arm,
        "detail": a.model_dump(mode="json"),
    }


def _upsert_task() -> Any:
    """Remember tasks' rows; a later attempt is never overwritten by an earlier one."""
    stmt = insert(assigner_tasks)
    t = assigner_tasks.c
    return stmt.on_conflict_do_update(
        index_elements=[t.namespace, t.task_id],
        set_={
            "status": stmt.excluded.status,
            "attempt": stmt.excluded.attempt,
            "failed_models": stmt.excluded.failed_models,
            "reason": stmt.excluded.reason,
            "retry_after": stmt.excluded.retry_after,
            "tries": t.tries + stmt.excluded.tries,
            "updated_at": func.now(),
        },
        where=t.attempt <= stmt.excluded.attempt,
    )


_UPSERT_TASK = _upsert_task()

#: Which of a batch's tasks were met before (see :meth:`AssignmentRepo.known`). The ids go
#: as arrays, so the statement's text (and its prepared form on each connection) is the
#: same for every batch size: an ``IN`` list would be prepared anew for each size.
#: Parameters: namespace, task ids, their first assignments' ids.
_KNOWN = """
    SELECT task_id FROM assigner_tasks
    WHERE namespace = $1 AND task_id = ANY($2::text[])
    UNION
    SELECT task_id FROM assignments WHERE assignment_id = ANY($3::text[])
"""

#: A batch's assignments and task rows in one statement (see :meth:`AssignmentRepo.record`);
#: the rows come as two JSON arrays (parameters 1 and 2). Task rows follow
#: :func:`_upsert_task`'s rule.
_RECORD = """
    WITH stored AS (
        INSERT INTO assignments (assignment_id, task_id, workspace, model, subscription,
                                 strategy, reservation_id, attempt, arm, detail)
        SELECT assignment_id, task_id, workspace, model, subscription, strategy,
               reservation_id, attempt, arm, detail
        FROM jsonb_to_recordset($1::jsonb) AS r(
            assignment_id text, task_id text, workspace text, model text,
            subscription text, strategy text, reservation_id text, attempt int,
            arm text, detail jsonb)
        ON CONFLICT DO NOTHING
        RETURNING assignment_id
    ), task_rows AS (
        INSERT INTO assigner_tasks AS t (namespace, task_id, workspace, status, attempt,
                                         estimated, value_score, failed_models, reason,
                                         retry_after, tries)
        SELECT namespace, task_id, workspace, status, attempt, estimated, value_score,
               failed_models, reason, retry_after, tries
        FROM jsonb_to_recordset($2::jsonb) AS r(
            namespace text, task_id text, workspace text, status text, attempt int,
            estimated jsonb, value_score float8, failed_models jsonb, reason text,
            retry_after timestamptz, tries int)
        ON CONFLICT (namespace, task_id) DO UPDATE SET
            status = excluded.status,
            attempt = excluded.attempt,
            failed_models = excluded.failed_models,
            reason = excluded.reason,
            retry_after = excluded.retry_after,
            tries = t.tries + excluded.tries,
            updated_at = now()
        WHERE t.attempt <= excluded.attempt
    )
    SELECT assignment_id FROM stored
"""


def _json_default(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _state(row: Any) -> TaskState:
    return TaskState(
        TaskEstimated.model_validate(row.estimated),
        row.status,
        row.attempt,
        tuple(row.failed_models),
    )
