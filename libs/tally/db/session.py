"""The async SQLAlchemy engine, configured for asyncpg."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine


def create_engine(url: str, *, pool_size: int = 5) -> AsyncEngine:
    """An async engine for ``url`` (``postgresql+asyncpg://…``); connects lazily."""
    return create_async_engine(url, pool_size=pool_size, max_overflow=5, pool_pre_ping=True)


def sessionmaker(engine: AsyncEngine) -> async_sessionmaker:  # type: ignore[type-arg]
    """Sessions that keep loaded objects usable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


def ping(engine: AsyncEngine) -> Callable[[], Awaitable[None]]:
    """A health probe: one ``SELECT 1`` through ``engine`` (raises if Postgres is down)."""

    async def select_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return select_one
