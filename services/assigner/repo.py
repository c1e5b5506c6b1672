"""The assigner's queries: it is the only writer of ``assignments``, ``assigner_tasks`` and
``experiments``; it reads the quota ledger to know a reservation was settled."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

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

    async def save(self, a: TaskAssigned) -> TaskAssigned:
        """Record an assignment unless one with its id exists; return the one kept.

        The first stored assignment wins: a concurrent attempt at the same assignment gets
        the stored one back (and must give up its own reservation).
        """
        async with self.engine.begin() as conn:
            inserted = await conn.execute(
                insert(assignments).on_conflict_do_nothing().returning(assignments.c.detail),
                {
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
                },
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
        async with self.engine.connect() as conn:
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
        row = {
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
        stmt = insert(assigner_tasks).values(row)
        t = assigner_tasks.c
        stmt = stmt.on_conflict_do_update(
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
        async with self.engine.begin() as conn:
            await conn.execute(stmt)

    async def task(self, task_id: str) -> TaskState | None:
        async with self.engine.connect() as conn:
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


def _state(row: Any) -> TaskState:
    return TaskState(
        TaskEstimated.model_validate(row.estimated),
        row.status,
        row.attempt,
        tuple(row.failed_models),
    )
