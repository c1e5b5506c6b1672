"""asyncpg connections for a hot path's fixed statements, beside a service's engine.

Through SQLAlchemy, one statement costs a pool checkout with its events, an isolation
level set and undone, the statement's cache key and parameters, and a greenlet hop: most
of a small batch's CPU in the assigner and the quota service. Through asyncpg, a
statement is prepared once per connection and then bound and run in one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine


async def _keep(conn: asyncpg.Connection) -> None:
    """Nothing to reset: these connections hold no session state (no reset round trip)."""


class DirectPool:
    """A small asyncpg pool on an engine's database, opened on first use.

    Each statement commits on its own (no transaction is opened around it): for a hot
    path whose work is one statement, a read or an atomic write. An ``executemany`` is
    applied all or none.

    Args:
        engine: the service's engine (its URL; its own pool is left alone).
        max_size: connections at most (a burst beyond waits for one).
    """

    def __init__(self, engine: AsyncEngine, *, max_size: int = 4) -> None:
        self._url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        self._max_size = max_size
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection of the pool for the block."""
        pool = self._pool or await self._open()
        async with pool.acquire() as conn:
            yield conn

    async def _open(self) -> asyncpg.Pool:
        async with self._lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=1,
                    max_size=self._max_size,
                    reset=_keep,
                    # As the engine's: Tally's statements are short (see create_engine).
                    server_settings={"jit": "off"},
                )
            return self._pool

    async def close(self) -> None:
        """Close the connections (the pool opens again on next use)."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
