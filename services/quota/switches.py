"""Freeze switches in Postgres: the durable record of which subscriptions are frozen.

The live switch is a Redis key the reservation script reads (see
:mod:`services.quota.reservations`); this table is what restores it after Redis lost its
data (``tally quota rebuild``). A change is written here first and the Redis key is set
inside the same transaction, with the switch's row locked, so two operators flipping one
switch at once leave Postgres and Redis agreeing, and a change that fails in either place
fails the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.db.tables import quota_switches


class FreezeSwitches:
    """The freeze switches of one installation ``namespace``."""

    def __init__(self, engine: AsyncEngine, namespace: str) -> None:
        self.engine = engine
        self.namespace = namespace

    async def set(
        self, subscription: str, frozen: bool, apply: Callable[[], Awaitable[None]]
    ) -> None:
        """Record ``subscription``'s switch, call ``apply`` (which sets Redis), then commit.

        If ``apply`` raises, nothing is recorded.
        """
        stmt = insert(quota_switches).values(
            namespace=self.namespace, subscription=subscription, frozen=frozen
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[quota_switches.c.namespace, quota_switches.c.subscription],
            set_={"frozen": stmt.excluded.frozen, "changed_at": func.now()},
        )
        async with self.engine.begin() as conn:
            await conn.execute(stmt)  # holds the row's lock until the commit
            await apply()

    async def all(self) -> dict[str, bool]:
        """Every recorded switch: subscription -> frozen."""
        s = quota_switches.c
        stmt = select(s.subscription, s.frozen).where(s.namespace == self.namespace)
        async with self.engine.connect() as conn:
            return {r.subscription: r.frozen for r in await conn.execute(stmt)}
