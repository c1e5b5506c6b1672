"""The async SQLAlchemy engine, configured for asyncpg."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)

#: Seconds a pooled connection is used at most before it is replaced (Postgres-side
#: state and memory do not grow without bound; a load balancer's idle cut is avoided).
POOL_RECYCLE_S = 1800


def create_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10) -> AsyncEngine:
    """An async engine for ``url`` (``postgresql+asyncpg://…``); connects lazily.

    Sized for a service's concurrent handlers, so a burst never opens connections of its
    own. No ping before each checkout (a round trip per use): a connection that Postgres
    dropped fails its statement, which SQLAlchemy recognises as a disconnect and answers
    by discarding every pooled connection, and the failed message is redelivered; old
    connections are replaced after ``POOL_RECYCLE_S``.

    JIT compilation is off: Postgres compiles a statement whose estimated cost is high
    (a report's window over millions of rows), and compiling took seconds where the
    query ran in tens of milliseconds; Tally's statements are short.
    """
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_pre_ping=False,
        pool_recycle=POOL_RECYCLE_S,
        connect_args={"server_settings": {"jit": "off"}},
    )


@asynccontextmanager
async def autocommit(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A pooled connection on which each statement commits on its own.

    For a hot path whose work is one statement (a read, or a write that must be atomic
    and therefore is one statement): no ``BEGIN`` before it and no ``COMMIT`` or
    ``ROLLBACK`` after it, one round trip instead of three. The setting is client-side
    and is undone when the connection goes back to the pool.
    """
    async with engine.connect() as conn:
        yield await conn.execution_options(isolation_level="AUTOCOMMIT")


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def ping(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """A health probe: one ``SELECT 1`` through ``engine`` (raises if Postgres is down)."""

    async def select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return select_one
