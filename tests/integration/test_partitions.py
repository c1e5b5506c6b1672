"""run_events and token_usage are partitioned by month: a redelivery is still stored once,
rows of a month without a partition wait in the default one until ``tally db
partitions`` gives them theirs, retention drops old months after exporting them, and the
run's queries still use their index on every partition."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from tally.db.partitions import asyncpg_dsn, maintain, partition_name
from tally.events import new_id
from tally.sandbox import sandbox
from tally.settings import TallySettings

pytestmark = pytest.mark.integration

INSERT = (
    "INSERT INTO run_events (event_id, run_id, workspace, kind, at, detail) "
    "VALUES ($1, $2, 'ws', 'note', $3, '{}') ON CONFLICT DO NOTHING"
)


async def _partitions(conn: asyncpg.Connection, table: str) -> set[str]:
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        table,
    )
    return {r["relname"] for r in rows}


async def test_monthly_partitions_adopt_old_rows_and_retention_drops_them_exported(
    base_settings: TallySettings, tmp_path: Path
) -> None:
    today = datetime.now(UTC).date()
    this_month = partition_name("run_events", today.replace(day=1))
    async with sandbox(base_settings, prefix="pt", database=True) as s:
        conn = await asyncpg.connect(asyncpg_dsn(s.database_url))
        try:
            for table in ("run_events", "token_usage"):
                made = await _partitions(conn, table)
                assert f"{table}_default" in made
                assert partition_name(table, today.replace(day=1)) in made
            old_id, new_id_ = f"e-{new_id()}", f"e-{new_id()}"
            old_at, new_at = datetime(2024, 1, 15, 12, tzinfo=UTC), datetime.now(UTC)
            for _ in range(2):  # the second time is a redelivery: stored once
                await conn.execute(INSERT, old_id, "run-old", old_at)
                await conn.execute(INSERT, new_id_, "run-new", new_at)
            assert await conn.fetchval("SELECT count(*) FROM run_events") == 2
            assert await conn.fetchval("SELECT count(*) FROM run_events_default") == 1
            assert await conn.fetchval(f'SELECT count(*) FROM "{this_month}"') == 1

            done = await maintain(s.database_url, ahead=3)
            assert "run_events_p202401" in done.created["run_events"]
            assert done.moved_rows["run_events"] == 1
            assert await conn.fetchval("SELECT count(*) FROM run_events_default") == 0
            assert await conn.fetchval("SELECT count(*) FROM run_events_p202401") == 1

            # The run's queries use the index on every partition.
            await conn.execute("SET enable_seqscan = off")
            plan = "\n".join(
                r[0]
                for r in await conn.fetch(
                    "EXPLAIN SELECT * FROM run_events WHERE run_id = 'run-old' ORDER BY at"
                )
            )
            # (Each partition has its own copy of every index; on rows this few the
            # planner may read either (run_id, at) or (at, run_id).)
            assert "Seq Scan" not in plan, plan
            assert "Index Scan using run_events_p202401_" in plan, plan
            await conn.execute("RESET enable_seqscan")

            export = tmp_path / "export"
            export.mkdir()
            done = await maintain(s.database_url, ahead=3, retention_months=12, export_dir=export)
            assert done.dropped["run_events"] == ["run_events_p202401"]
            assert "run_events_p202401" not in await _partitions(conn, "run_events")
            with (export / "run_events_p202401.csv").open() as f:
                assert [r["event_id"] for r in csv.DictReader(f)] == [old_id]
            assert await conn.fetchval("SELECT count(*) FROM run_events") == 1
            # Once more, as the CronJob runs it: nothing to do.
            out = subprocess.run(
                [sys.executable, "-m", "tally.cli.main", "db", "partitions", "--json"],
                env={
                    **os.environ,
                    "TALLY_DATABASE_URL": s.database_url,
                    "TALLY_PARTITION_RETENTION_MONTHS": "12",
                },
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            again = json.loads(out.stdout)
            assert again["created"] == {"run_events": [], "token_usage": []}
            assert again["dropped"] == {"run_events": [], "token_usage": []}
        finally:
            await conn.close()
