"""The routing policy's durable state: each workspace's trainer, and its checkpoints.

The trainer state (policy with its evidence, version, runs waiting for a full group) is
written in the transaction that records the run it learned from (see
:meth:`services.learner.repo.LearnerRepo.record_run`), under a per-workspace advisory
lock, so a crash between two checkpoints loses nothing and a redelivered run, already
recorded, is not learned twice. Checkpoints are versioned snapshots with their held-out
score: the history of the policy, and where a workspace without state starts from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.learner.policy import Checkpoint
from services.learner.training import LearnedRun
from tally.db.tables import learner_runs, learner_state, policy_checkpoints
from tally.money import micros_to_usd

#: Trainer state as stored: ``{"version", "policy", "pending"}`` (see ``PolicyTrainer``).
State = dict[str, Any]


@dataclass(frozen=True)
class StoredCheckpoint:
    """A checkpoint row: its id, version, score and the policy saved with it."""

    checkpoint: Checkpoint
    version: int
    policy: dict[str, Any]


def learned_run(r: Any) -> LearnedRun:
    """A ``learner_runs`` row as the policy sees it."""
    return LearnedRun(
        r.run_id,
        r.task_id,
        r.model,
        r.task_type,
        r.band,
        r.reward,
        micros_to_usd(r.cost_micros),
        r.at,
        r.attempt,
    )


async def learned_runs(conn: AsyncConnection, workspace: str) -> list[LearnedRun]:
    """Every recorded run of a workspace, oldest first."""
    rows = await conn.execute(
        select(learner_runs)
        .where(learner_runs.c.workspace == workspace)
        .order_by(learner_runs.c.at, learner_runs.c.run_id)
    )
    return [learned_run(r) for r in rows]


async def lock_workspace(conn: AsyncConnection, workspace: str) -> None:
    """Hold the workspace's trainer lock until ``conn``'s transaction ends."""
    key = func.hashtextextended(f"learner_state|{workspace}", 0)
    await conn.execute(select(func.pg_advisory_xact_lock(key)))


async def load_state(conn: AsyncConnection, workspace: str) -> State | None:
    """The workspace's trainer state; else its newest checkpoint's policy; else None."""
    state: State | None = await conn.scalar(
        select(learner_state.c.state).where(learner_state.c.workspace == workspace)
    )
    if state is not None:
        return state
    p = policy_checkpoints.c
    row = (
        await conn.execute(
            select(p.version, p.policy)
            .where(p.workspace == workspace)
            .order_by(p.created_at.desc(), p.id.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else {"version": row.version, "policy": row.policy, "pending": []}


async def save_state(conn: AsyncConnection, workspace: str, state: State) -> None:
    stmt = insert(learner_state).values(
        workspace=workspace, version=int(state["version"]), state=state
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[learner_state.c.workspace],
            set_={
                "version": stmt.excluded.version,
                "state": stmt.excluded.state,
                "updated_at": func.now(),
            },
        )
    )


class PolicyStore:
    """Trainer state and checkpoints, per workspace."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # -- trainer state --------------------------------------------------------------------
    async def state(self, workspace: str) -> State | None:
        """The workspace's trainer as last committed (see :func:`load_state`)."""
        async with self.engine.connect() as conn:
            return await load_state(conn, workspace)

    async def replace_state(
        self, workspace: str, rebuild: Callable[[State | None, list[LearnedRun]], State]
    ) -> State:
        """Replace the trainer state with ``rebuild(current, runs)``, atomically.

        ``runs`` are the workspace's runs recorded so far, oldest first: ``rebuild`` learns
        the ones its new state has not seen. Runs recorded meanwhile wait for the lock,
        then learn on top of the new state.
        """
        async with self.engine.begin() as conn:
            await lock_workspace(conn, workspace)
            current = await load_state(conn, workspace)
            state = rebuild(current, await learned_runs(conn, workspace))
            await save_state(conn, workspace, state)
        return state

    # -- policy checkpoints ---------------------------------------------------------------
    async def save_checkpoint(
        self,
        workspace: str,
        version: int,
        score: float | None,
        policy: dict[str, Any],
        retain: Callable[[Sequence[Checkpoint]], Sequence[Checkpoint]],
    ) -> int:
        """Save a checkpoint, then delete the workspace's checkpoints ``retain`` drops."""
        async with self.engine.begin() as conn:
            # Replicas checkpoint one at a time, each seeing the others' checkpoints.
            key = func.hashtextextended(f"policy_checkpoints|{workspace}", 0)
            await conn.execute(select(func.pg_advisory_xact_lock(key)))
            new_id = await conn.scalar(
                insert(policy_checkpoints)
                .values(workspace=workspace, version=version, score=score, policy=policy)
                .returning(policy_checkpoints.c.id)
            )
            rows = (
                await conn.execute(
                    select(
                        policy_checkpoints.c.id,
                        policy_checkpoints.c.created_at,
                        policy_checkpoints.c.score,
                    ).where(policy_checkpoints.c.workspace == workspace)
                )
            ).all()
            # The id breaks ties between checkpoints saved within one clock tick.
            items = [Checkpoint(str(r.id), r.created_at, r.score) for r in rows]
            kept = {c.id for c in retain(items)}
            dropped = [int(c.id) for c in items if c.id not in kept]
            if dropped:
                await conn.execute(
                    delete(policy_checkpoints).where(policy_checkpoints.c.id.in_(dropped))
                )
        return int(new_id)

    async def latest_checkpoint(self, workspace: str) -> StoredCheckpoint | None:
        """The newest checkpoint of a workspace (highest version, then newest)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(policy_checkpoints)
                    .where(policy_checkpoints.c.workspace == workspace)
                    .order_by(
                        policy_checkpoints.c.created_at.desc(), policy_checkpoints.c.id.desc()
                    )
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return StoredCheckpoint(
            Checkpoint(str(row.id), row.created_at, row.score), row.version, row.policy
        )

    async def checkpoints(self, workspace: str) -> list[StoredCheckpoint]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(policy_checkpoints)
                    .where(policy_checkpoints.c.workspace == workspace)
                    .order_by(policy_checkpoints.c.id)
                )
            ).all()
        return [
            StoredCheckpoint(Checkpoint(str(r.id), r.created_at, r.score), r.version, r.policy)
            for r in rows
        ]
