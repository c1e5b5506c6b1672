"""A task type's historical velocity, kept as a running sum per workspace and task type.

Each logged run adds its velocity to ``velocity_totals`` in the transaction that logs it,
so the history a new run is compared with is one primary-key read, however many runs the
workspace has logged (averaging ``velocity_logs`` on every run grew with all of them).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tally.db.tables import velocity_totals


async def history_velocity(conn: AsyncConnection, workspace: str, task_type: str) -> float | None:
    """The mean velocity of the runs logged so far for ``task_type``, or None."""
    row = (
        await conn.execute(
            select(velocity_totals.c.runs, velocity_totals.c.velocity_sum).where(
                velocity_totals.c.workspace == workspace,
                velocity_totals.c.task_type == task_type,
            )
        )
    ).first()
    return row.velocity_sum / row.runs if row is not None and row.runs else None


async def add_velocity(
    conn: AsyncConnection, workspace: str, task_type: str, velocity: float
) -> None:
    """Count one more logged run's velocity (call once per newly logged run)."""
    stmt = insert(velocity_totals).values(
        workspace=workspace, task_type=task_type, runs=1, velocity_sum=velocity
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["workspace", "task_type"],
            set_={
                "runs": velocity_totals.c.runs + 1,
                "velocity_sum": velocity_totals.c.velocity_sum + velocity,
            },
        )
    )
