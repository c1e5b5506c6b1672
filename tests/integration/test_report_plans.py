"""Every report and export query finds its rows through an index at a realistic volume.

A fresh database gets a year of work COPYed into monthly partitions (5,000 runs: 250,000
run events, 100,000 worker calls, status changes, tasks, assignments; ANALYZEd). Every read
endpoint is then asked through the API while each SQL statement it sends is recorded, and
each statement is EXPLAINed with its own parameters: a sequential scan of a table of more
than ``LARGE_ROWS`` rows fails the test, naming the endpoint, the table and the statement.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from benchmarks.report_data import load, partitions_for
from services.reporter.api import create_api
from services.reporter.auth import TokenStore
from services.reporter.live import LiveHub
from services.reporter.orphans import count_orphans
from services.reporter.repo import ReportRepo
from tally.db import create_engine
from tally.db.migrate import drop_database, migrate
from tally.db.partitions import PARTITIONED, partition_month
from tally.events import new_id
from tally.settings import TallySettings

pytestmark = pytest.mark.integration

#: A table with more rows than this is large: reading all of it for one answer is a bug.
LARGE_ROWS = 10_000
#: A partition of a large table holding more rows than this is large too.
PARTITION_ROWS = 1_000
#: Read through an index whatever their size here: they hold a few rows a day (a year of
#: them at 10 million run events is ~56,000 rows) and a window reads a month at most.
ROLLUPS = {"token_usage_daily"}
#: The most monthly partitions of a table one read of a run visits (a run can cross the
#: turn of a month).
RUN_MONTHS = 2
TOKEN = "tly_plans-operator"


def endpoints(run_ids: list[str], task_ids: list[str], now: datetime) -> list[str]:
    a, b, t = run_ids[-1], run_ids[-2], task_ids[-3]
    day = (now - timedelta(days=20)).date().isoformat()
    return [
        f"/runs/{a}",
        f"/runs/{a}/kpi",
        f"/compare?a={a}&b={b}",
        f"/tasks/{t}",
        *(f"/tokens?since={w}&by={by}" for w in ("7d", "30d") for by in ("model", "agent")),
        "/tokens?since=7d&by=task&workspace=ws-1",
        "/tokens?since=7d&by=command&workspace=ws-2",
        "/tokens?since=30d&by=provider&workspace=ws-3&limit=2",
        "/dashboard/series",
        "/dashboard/series?workspace=ws-2&since=30d",
        "/dashboard/series?since=36h",
        "/lanes",
        "/lanes?workspace=ws-2",
        "/dashboard/stats?since=7d",
        "/dashboard/stats?since=7d&workspace=ws-3",
        "/models/performance",
        *(
            f"/export/{kind}?limit=500{extra}"
            for kind in ("token_usage", "runs", "tasks", "status_events")
            for extra in ("", "&workspace=ws-1", "&since=30d", f"&since={day}&workspace=ws-0")
        ),
        f"/export/token_usage?limit=100&task_id={t}",
        f"/export/token_usage?limit=100&run_id={a}",
        f"/export/runs?limit=100&task_id={t}",
        f"/export/status_events?limit=100&task_id={t}",
    ]


@pytest.fixture(scope="module")
async def loaded(base_settings: TallySettings) -> AsyncIterator[tuple[str, Any, datetime]]:
    url = (
        make_url(base_settings.database_url)
        .set(database=f"tally_plans_{new_id()[:8]}")
        .render_as_string(hide_password=False)
    )
    await migrate(url)
    now = datetime.now(UTC)
    try:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        # a partition per month, as a year of `tally db partitions` leaves them
        await partitions_for(dsn, 12)
        data = await load(dsn, 5_000, now, days=365)
        yield url, data, now
    finally:
        await drop_database(url)


def seq_scans(plan: dict[str, Any]) -> list[str]:
    """Relations a plan reads with a sequential scan."""
    found = [plan["Relation Name"]] if plan.get("Node Type") == "Seq Scan" else []
    for child in plan.get("Plans", ()):
        found += seq_scans(child)
    return found


#: A statement sent for an endpoint: (what was asked, SQL, its parameters).
Sent = list[tuple[str, str, tuple[Any, ...]]]


async def statements(url: str, paths: list[str], now: datetime) -> Sent:
    """Every SQL statement the reporter sends to answer ``paths`` (and the page after each
    export page, and the orphan gauge); each answer must be 200."""
    engine = create_engine(url)
    sent: Sent = []
    asking = [""]

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def record(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        sent.append((asking[0], statement, tuple(params or ())))

    api = create_api(ReportRepo(engine), LiveHub(lambda: None), lambda: None, TokenStore(engine))
    api.state.tokens = TokenStore(engine, TOKEN)
    transport = httpx.ASGITransport(app=api)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers=headers
        ) as h:
            for path in paths:
                asking[0] = path
                response = await h.get(path)
                assert response.status_code == 200, (path, response.text[:500])
                if path.startswith("/export/") and "cursor" not in path:
                    # and the page after it (a keyset page deep in the table)
                    cursor = response.json()["next_cursor"]
                    asking[0] = f"{path} (next page)"
                    assert (await h.get(path, params={"cursor": cursor})).status_code == 200
        asking[0] = "orphan gauge"
        await count_orphans(engine, now, timedelta(minutes=10))
    finally:
        await engine.dispose()
    return sent


def scanned_relations(plan: dict[str, Any]) -> list[str]:
    """Every relation a plan reads (a partitioned table's partitions by their own names)."""
    found = [plan["Relation Name"]] if "Relation Name" in plan else []
    for child in plan.get("Plans", ()):
        found += scanned_relations(child)
    return found


async def test_no_report_or_export_query_scans_a_large_table(
    loaded: tuple[str, Any, datetime],
) -> None:
    url, data, now = loaded
    sent = await statements(url, endpoints(data.run_ids, data.task_ids, now), now)
    conn = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    try:
        # A partitioned table (run_events, token_usage) is large by the sum of its
        # partitions; a Seq Scan on one of its partitions counts when that partition holds
        # more than PARTITION_ROWS (an empty month ahead is cheapest read whole).
        parent = {
            r["child"]: r["parent"]
            for r in await conn.fetch(
                "SELECT ch.relname AS child, pa.relname AS parent FROM pg_inherits i "
                "JOIN pg_class ch ON ch.oid = i.inhrelid JOIN pg_class pa ON pa.oid = i.inhparent"
            )
        }
        rows = {
            r["relname"]: max(float(r["reltuples"]), 0.0)
            for r in await conn.fetch("SELECT relname, reltuples FROM pg_class WHERE relkind = 'r'")
        }
        sizes: dict[str, float] = {}
        for name, n in rows.items():
            sizes[parent.get(name, name)] = sizes.get(parent.get(name, name), 0.0) + n
        large = {name for name, n in sizes.items() if n > LARGE_ROWS} | {
            name
            for name, n in rows.items()
            if name in parent and sizes[parent[name]] > LARGE_ROWS and n > PARTITION_ROWS
        }
        # /lanes reads the rows kept per task for a window; a whole read of them grows
        # with the years of tasks behind it, whatever the window.
        kept = {"task_lanes", "task_lane_times", "task_lane_exits", "task_lane_days"}
        large |= {name for name in kept if sizes.get(name, 0) > PARTITION_ROWS}
        assert {"run_events", "token_usage", "task_status_events", *kept} <= large, sizes
        large |= ROLLUPS
        failures = []
        checked = 0
        settings_of = ""
        for path, statement, params in sent:
            if settings_of != path:
                settings_of = path
                await conn.execute("RESET ALL")
            if statement.lstrip().upper().startswith("SET LOCAL "):
                # what the endpoint set for its transaction holds for its plans here
                await conn.execute("SET " + statement.lstrip()[len("SET LOCAL ") :])
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            checked += 1
            plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *params))
            scanned = [t for t in seq_scans(plan[0]["Plan"]) if t in large]
            if scanned:
                failures.append(f"{path}: Seq Scan on {scanned} in\n{statement}")
    finally:
        await conn.close()
    assert checked >= 40, f"only {checked} queries were recorded"
    assert not failures, "\n\n".join(failures)


async def test_reads_of_a_run_visit_only_the_months_it_has_rows_in(
    loaded: tuple[str, Any, datetime],
) -> None:
    """A run id says nothing of its time: unbounded, a lookup by run id asks every monthly
    partition (13 here, 130 in ten years of history). Each statement of a run's reads
    visits at most ``RUN_MONTHS`` partitions of each time-series table, and the run list
    none (its sums come from the hourly rollup)."""
    url, data, now = loaded
    a, b = data.run_ids[-1], data.run_ids[-2]
    reads = [f"/runs/{a}", f"/runs/{a}/kpi", f"/compare?a={a}&b={b}", "/runs?limit=50"]
    sent = await statements(url, reads, now)
    conn = await asyncpg.connect(
        make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    )
    failures = []
    try:
        for path, statement, params in sent:
            if path not in reads or not statement.lstrip().upper().startswith("SELECT"):
                continue
            plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) {statement}", *params))
            visited = scanned_relations(plan[0]["Plan"])
            for table in PARTITIONED:
                months = {
                    r
                    for r in visited
                    if r == f"{table}_default" or (r.startswith(table) and partition_month(r))
                }
                most = 0 if path.startswith("/runs?") else RUN_MONTHS
                if len(months) > most:
                    failures.append(f"{path}: {len(months)} partitions of {table} in\n{statement}")
    finally:
        await conn.close()
    assert not failures, "\n\n".join(failures)
