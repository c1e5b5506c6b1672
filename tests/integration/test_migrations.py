"""The Alembic migrations produce exactly the schema the code declares."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from tally.db import create_engine
from tally.db.tables import metadata
from tally.settings import TallySettings


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, metadata))


async def test_migrated_schema_matches_tables(stack: TallySettings) -> None:
    engine = create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], f"migrations and tally.db.tables disagree: {diff}"
