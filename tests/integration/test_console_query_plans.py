"""The console's listings stay index scans at volume: ``GET /runs`` and ``GET /tasks``
are EXPLAINed (and run: ``EXPLAIN ANALYZE``) over 200k runs, 400k token-usage rows and
100k tasks loaded with COPY. A sequential scan of any of those tables fails the test, and
so does any plan node that reads more than a few pages' worth of one of them (a full index
scan, say, feeding an aggregate or a sort)."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import Select
from sqlalchemy.dialects import postgresql

from services.reporter.listings import (
    RunListParams,
    TaskListParams,
    run_list_query,
    task_list_query,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

TASKS = 100_000
RUNS_PER_TASK = 2
CALLS_PER_RUN = 2
WORKSPACES = 40
#: The tables a listing must never read end to end.
LARGE = ("runs", "tasks", "token_usage", "token_usage_hourly", "assigner_tasks")
#: The most rows a listing of 100 may read from one of them in one plan node (a page of
#: runs, its calls, or one workspace's deferred tasks; a whole table is 100k and more).
MAX_ROWS = 5_000
T0 = datetime(2026, 9, 1, tzinfo=UTC)


async def load(h: Harness) -> None:
    """COPY a quarter's worth of tasks, runs, calls and assigner states, then ANALYZE."""
    rng = random.Random(7)
    task_rows, run_rows, usage_rows, assigner_rows = [], [], [], []
    for i in range(TASKS):
        task_id, ws = f"T-{i}", f"ws-{i % WORKSPACES}"
        created = T0 + timedelta(minutes=i)
        status = rng.choice(("backlog", "in_progress", "ready_to_review", "completed"))
        task_rows.append((task_id, ws, f"task {i}", "P2", status, f"e-{i}", created))
        state = "deferred" if i % 47 == 0 else "assigned"
        assigner_rows.append(("", task_id, ws, state, "{}"))
        for r in range(RUNS_PER_TASK):
            run_id = f"R-{i}-{r}"
            at = created + timedelta(minutes=10 * r)
            started = None if i % 10 == 0 else at  # some runs were seen before they started
            run_rows.append((run_id, ws, task_id, "m-test", started, "complete", at))
            for c in range(CALLS_PER_RUN):
                usage_rows.append((f"u-{i}-{r}-{c}", run_id, ws, 1000, 200, 50_000, at))
    async with h.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        await raw.copy_records_to_table(
            "tasks",
            records=task_rows,
            columns=(
                "task_id",
                "workspace",
                "title",
                "priority",
                "status",
                "event_id",
                "created_at",
            ),
        )
        await raw.copy_records_to_table(
            "runs",
            records=run_rows,
            columns=(
                "run_id",
                "workspace",
                "task_id",
                "model",
                "started_at",
                "outcome",
                "created_at",
            ),
        )
        await raw.copy_records_to_table(
            "token_usage",
            records=usage_rows,
            columns=(
                "event_id",
                "run_id",
                "workspace",
                "input_tokens",
                "output_tokens",
                "cost_micros",
                "at",
            ),
        )
        await raw.copy_records_to_table(
            "assigner_tasks",
            records=assigner_rows,
            columns=("namespace", "task_id", "workspace", "status", "estimated"),
        )
        for table in LARGE:
            await raw.execute(f"ANALYZE {table}")


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(n for child in node.get("Plans", []) for n in _nodes(child))]


def _too_much(plan: dict[str, Any]) -> list[str]:
    """The plan's nodes that scan a large table whole or read more than ``MAX_ROWS`` of it."""
    found = []
    for node in _nodes(plan):
        table = node.get("Relation Name")
        if table not in LARGE:
            continue
        read = node["Actual Rows"] * node["Actual Loops"] + node.get("Rows Removed by Filter", 0)
        if node["Node Type"] == "Seq Scan" or read > MAX_ROWS:
            found.append(f"{node['Node Type']} on {table}: {read} rows")
    return found


async def explained(h: Harness, stmt: Select[Any]) -> tuple[dict[str, Any], str]:
    """The executed plan (JSON) and its text form, for the failure message."""
    sql = stmt.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})
    async with h.engine.connect() as conn:
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        data = await raw.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")
        if isinstance(data, str):  # unless the connection decodes json itself
            data = json.loads(data)
        text = "\n".join(r[0] for r in await raw.fetch(f"EXPLAIN {sql}"))
    return data[0]["Plan"], text


async def test_run_and_task_listings_use_indexes_at_volume(harness: Harness) -> None:
    h = harness
    await load(h)
    ws = "ws-3"
    queries = {
        "runs": run_list_query(RunListParams(), None),
        "runs of a workspace": run_list_query(RunListParams(workspace=ws), ws),
        "runs of a workspace since 7d": run_list_query(
            RunListParams(workspace=ws, since="2026-11-01"), ws
        ),
        "runs of a task": run_list_query(RunListParams(task_id="T-4242"), None),
        "runs of a model": run_list_query(RunListParams(model="m-test"), None),
        "tasks": task_list_query(TaskListParams(), None, ""),
        "tasks of a workspace": task_list_query(TaskListParams(workspace=ws), ws, ""),
        "tasks of a workspace in work": task_list_query(
            TaskListParams(workspace=ws, lane="work"), ws, ""
        ),
        "deferred tasks of a workspace": task_list_query(
            TaskListParams(workspace=ws, assigner="deferred"), ws, ""
        ),
    }
    bad = {}
    for name, stmt in queries.items():
        plan, text = await explained(h, stmt)
        assert plan["Actual Rows"] > 0, f"{name}: the listing found nothing to list"
        if found := _too_much(plan):
            bad[name] = "; ".join(found) + "\n" + text
    assert not bad, "listings reading whole tables:\n\n" + "\n\n".join(
        f"{name}: {why}" for name, why in bad.items()
    )
