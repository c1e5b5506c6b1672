"""The Alembic migrations produce exactly the schema the code declares."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import asyncpg
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.engine import make_url

from tally.db import create_engine
from tally.db.migrate import alembic_config, drop_database, ensure_database, upgrade
from tally.db.partitions import include_name
from tally.db.tables import metadata
from tally.events import new_id
from tally.settings import TallySettings


def downgrade(url: str, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)


def _diff(conn: Connection) -> list[Any]:
    ctx = MigrationContext.configure(
        conn, opts={"compare_type": True, "include_name": include_name}
    )
    return list(compare_metadata(ctx, metadata))


async def test_migrated_schema_matches_tables(stack: TallySettings) -> None:
    engine = create_engine(stack.database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == [], f"migrations and tally.db.tables disagree: {diff}"


async def test_money_columns_become_exact_micros_and_back(base_settings: TallySettings) -> None:
    """0006 converts stored float dollars to integer micros (and the downgrade back)."""
    url = (
        make_url(base_settings.database_url)
        .set(database=f"tally_mig{new_id()[:8]}")
        .render_as_string(hide_password=False)
    )
    await ensure_database(url)
    try:
        await asyncio.to_thread(upgrade, url, "0004_wider_ids")
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        conn = await asyncpg.connect(dsn)
        try:
            at = datetime(2026, 11, 1, tzinfo=UTC)
            await conn.executemany(
                "INSERT INTO token_usage (event_id, run_id, workspace, at, cost_usd)"
                " VALUES ($1, 'r', 'w', $2, $3)",
                [("priced", at, 0.058499999999999996), ("free", at, 0.0), ("none", at, None)],
            )
            await conn.execute(
                "INSERT INTO quota_ledger (op_key, reservation_id, subscription, op, tokens,"
                " cost_usd, day, month, at) VALUES ('settle:x', 'x', 's', 'settle', 10,"
                " 248.75, '2026-11-01', '2026-11', $1)",
                at,
            )
            await conn.execute(
                "INSERT INTO learner_runs (run_id, workspace, task_id, model, task_type, band,"
                " success, quality, cost_usd, tokens, reward, at)"
                " VALUES ('r', 'w', 't', 'm', 'feature', 'simple', true, 1, 0.0000025, 1, 1, $1)",
                at,
            )
            await asyncio.to_thread(upgrade, url, "0006_money_micros")
            rows = await conn.fetch("SELECT event_id, cost_micros, cost_known FROM token_usage")
            usage = {r["event_id"]: (r["cost_micros"], r["cost_known"]) for r in rows}
            assert usage == {
                "priced": (58_500, True),
                "free": (0, True),
                "none": (None, False),
            }
            assert await conn.fetchval("SELECT cost_micros FROM quota_ledger") == 248_750_000
            assert await conn.fetchval("SELECT fallback_micros FROM quota_ledger") == 0
            # half a micro-dollar rounds up (Postgres rounds numeric halves away from zero)
            assert await conn.fetchval("SELECT cost_micros FROM learner_runs") == 3

            await asyncio.to_thread(downgrade, url, "0004_wider_ids")
            assert await conn.fetchval("SELECT cost_usd FROM quota_ledger") == 248.75
            assert (
                await conn.fetchval("SELECT cost_usd FROM token_usage WHERE event_id = 'priced'")
                == 0.0585
            )
        finally:
            await conn.close()
    finally:
        await drop_database(url)
