"""A realistic reporter load for ``benchmarks/report.py``: tasks, runs, their run events and
worker calls, status changes and assignments, spread over the last 90 days, COPYed in.

Per task: one run of ``EVENTS_PER_RUN`` events (two fifths of them worker calls, each with
its ``token_usage`` row), an assignment, and status changes backlog → work → review → QA
→ completed; tasks of the last two days stop in a lane (the work in progress).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tally.db.partitions import PARTITIONED, add_months, create_month, existing_months, month_of

WORKSPACES = ("ws-0", "ws-1", "ws-2", "ws-3")
MODELS = (
    ("claude-sonnet-4", "anthropic"),
    ("gpt-5", "openai"),
    ("gemini-2.5-pro", "google"),
    ("claude-haiku-4", "anthropic"),
)
COMMANDS = ("implement", "review", "test", "plan")
PHASES = ("plan", "implement", "verify")
EVENTS_PER_RUN = 50
#: Of every run's events: worker calls, phase starts/ends, and the rest.
PATTERN = (
    ["phase_start", "worker_call", "worker_call", "worker_call", "worker_call", "note"] * 3
    + ["worker_call"] * 8
    + ["phase_end"] * 3
    + ["verification"] * 4
    + ["checkpoint"] * 2
    + ["changes"] * 2
    + ["milestone"] * 2
    + ["note"] * 11
)
assert len(PATTERN) == EVENTS_PER_RUN and PATTERN.count("worker_call") == 20
DAYS = 90
LANE_FLOW = ("in_progress", "ready_to_review", "ready_to_qa", "completed")


def detail(kind: str, j: int, model: str, phase: str) -> dict[str, Any]:
    if kind in ("phase_start", "phase_end"):
        return {"kind": kind, "phase": phase, "attempt": 1}
    if kind == "worker_call":
        return {"kind": kind, "worker": model, "model": model, "phase": phase, "latency_ms": 900}
    if kind == "verification":
        return {"kind": kind, "passed": j % 3 != 0, "retry": j % 3 == 0}
    if kind == "checkpoint":
        return {"kind": kind, "name": f"cp{j}", "verified": True}
    if kind == "changes":
        return {"kind": kind, "files": 3, "lines_added": 40, "lines_removed": 7}
    if kind == "milestone":
        return {"kind": kind, "name": f"m{j}", "status": "completed"}
    return {"kind": "note", "text": "progress"}


class Load:
    """Rows of every table, generated task by task (deterministic for a seed)."""

    def __init__(
        self,
        runs: int,
        now: datetime,
        seed: int = 7,
        days: float = DAYS,
        first: int = 0,
        after_days: float = 0,
    ) -> None:
        self.count = runs
        self.first = first
        self.days = days
        self.after_days = after_days
        self.now = now
        self.rnd = random.Random(seed + first)
        self.tasks: list[tuple[Any, ...]] = []
        self.runs: list[tuple[Any, ...]] = []
        self.assignments: list[tuple[Any, ...]] = []
        self.status: list[tuple[Any, ...]] = []
        self.run_ids: list[str] = []
        self.task_ids: list[str] = []

    def events(self) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
        """Each run event, with its token_usage row for a worker call (else None)."""
        rnd = self.rnd
        for i in range(self.first, self.first + self.count):
            ws = WORKSPACES[i % len(WORKSPACES)]
            task_id, run_id = f"task-{i:07d}", f"run-{i:07d}"
            model, provider = MODELS[rnd.randrange(len(MODELS))]
            command = COMMANDS[i % len(COMMANDS)]
            back = rnd.uniform(max(3600, self.after_days * 86400), self.days * 86400)
            created = self.now - timedelta(seconds=back)
            start = created + timedelta(minutes=rnd.uniform(1, 60))
            step = timedelta(seconds=rnd.uniform(10, 60))
            finish = start + step * EVENTS_PER_RUN
            self.task_ids.append(task_id)
            self.run_ids.append(run_id)
            for j, kind in enumerate(PATTERN):
                at = start + step * j
                phase = PHASES[min(j // 6, 2)]
                event_id = f"{run_id}-e{j:02d}"
                row = (event_id, run_id, ws, kind, at, json.dumps(detail(kind, j, model, phase)))
                usage = None
                if kind == "worker_call":
                    inp, out = rnd.randrange(500, 20_000), rnd.randrange(50, 3_000)
                    usage = (
                        event_id, run_id, ws, task_id, model, model, provider, phase,
                        inp, out, 0, rnd.randrange(0, 8_000), 0, 0, False, at,
                        at, 900.0, command, "call", "chat", "USD",
                        inp * 3 + out * 15, True, at, json.dumps({}),
                    )  # fmt: skip
                yield row, usage
            self._task(i, ws, task_id, run_id, model, provider, command, created, start, finish)

    def _task(
        self,
        i: int,
        ws: str,
        task_id: str,
        run_id: str,
        model: str,
        provider: str,
        command: str,
        created: datetime,
        start: datetime,
        finish: datetime,
    ) -> None:
        rnd = self.rnd
        recent = self.now - created < timedelta(days=2)
        stages = rnd.randrange(1, 4) if recent else len(LANE_FLOW)
        previous, at = "backlog", created
        for s, status in enumerate(LANE_FLOW[:stages]):
            at = at + timedelta(hours=rnd.uniform(0.2, 8)) if s else start
            at = min(at, self.now - timedelta(seconds=1))
            self.status.append(
                (f"{task_id}-s{s}", task_id, ws, previous, status, at, command, None, run_id,
                 "agent-1", json.dumps({}))
            )  # fmt: skip
            previous = status
        done = previous == "completed"
        self.tasks.append(
            (task_id, ws, f"Task {i}: implement part {i % 97}", "", f"P{i % 5}",
             json.dumps([]), "feature", json.dumps([]), None, None, previous,
             float(rnd.choice([1, 2, 3, 5, 8])), None, None, 50.0, model,
             at if done else None, None, f"{task_id}-created", created)
        )  # fmt: skip
        self.runs.append(
            (run_id, ws, task_id, f"{task_id}-a1", f"res-{run_id}", model, provider,
             f"agent-{i % 40}", json.dumps([]), command, None, start, finish, "complete",
             True, None, None, EVENTS_PER_RUN, finish, start)
        )  # fmt: skip
        assigned = {
            "event_id": f"{task_id}-assigned", "occurred_at": created.isoformat(),
            "workspace": ws, "source": "assigner", "task_id": task_id,
            "assignment_id": f"{task_id}-a1", "model": model, "provider": provider,
            "subscription": "team", "strategy": "maximize_value",
            "reservation": {"reservation_id": f"res-{run_id}", "subscription": "team",
                            "tokens": 40_000, "cost_usd": 0.25,
                            "expires_at": (created + timedelta(hours=2)).isoformat()},
        }  # fmt: skip
        self.assignments.append(
            (f"{task_id}-a1", task_id, ws, model, "team", "maximize_value", f"res-{run_id}",
             1, None, json.dumps(assigned), created)
        )  # fmt: skip


RUN_EVENT_COLUMNS = ("event_id", "run_id", "workspace", "kind", "at", "detail")
USAGE_COLUMNS = (
    "event_id", "run_id", "workspace", "task_id", "worker", "model", "provider", "phase",
    "input_tokens", "output_tokens", "cached_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "estimated", "started_at", "finished_at",
    "duration_ms", "command", "action", "invocation_kind", "currency", "cost_micros",
    "cost_known", "at", "metadata",
)  # fmt: skip
TASK_COLUMNS = (
    "task_id", "workspace", "title", "description", "priority", "labels", "task_type",
    "dependencies", "plan_id", "team_estimate", "status", "story_points", "hours_p50",
    "hours_p90", "value_score", "model", "completed_at", "actual_hours", "event_id",
    "created_at",
)  # fmt: skip
RUN_COLUMNS = (
    "run_id", "workspace", "task_id", "assignment_id", "reservation_id", "model", "provider",
    "agent_id", "agent_ids", "command", "job_id", "started_at", "finished_at", "outcome",
    "success", "quality", "totals", "expected_events", "finish_seen_at", "created_at",
)  # fmt: skip
STATUS_COLUMNS = (
    "event_id", "task_id", "workspace", "from_status", "to_status", "changed_at", "command",
    "job_id", "task_run_id", "agent_id", "metadata",
)  # fmt: skip
ASSIGNMENT_COLUMNS = (
    "assignment_id", "task_id", "workspace", "model", "subscription", "strategy",
    "reservation_id", "attempt", "arm", "detail", "created_at",
)  # fmt: skip


async def load(
    dsn: str,
    runs: int,
    now: datetime,
    *,
    days: float = DAYS,
    chunk: int = 50_000,
    first: int = 0,
    after_days: float = 0,
) -> Load:
    """COPY ``runs`` runs (``runs * EVENTS_PER_RUN`` run events) and their rows, created
    evenly over the last ``days`` days, or only those older than ``after_days`` (history
    behind an earlier load); ANALYZE. ``first`` numbers the runs on from an earlier load."""
    data = Load(runs, now, days=days, first=first, after_days=after_days)
    conn = await asyncpg.connect(dsn)
    try:
        events: list[tuple[Any, ...]] = []
        usage: list[tuple[Any, ...]] = []

        async def flush() -> None:
            await conn.copy_records_to_table(
                "run_events", records=events, columns=RUN_EVENT_COLUMNS
            )
            await conn.copy_records_to_table("token_usage", records=usage, columns=USAGE_COLUMNS)
            events.clear()
            usage.clear()

        for row, call in data.events():
            events.append(row)
            if call is not None:
                usage.append(call)
            if len(events) >= chunk:
                await flush()
        await flush()
        for table, rows, columns in (
            ("tasks", data.tasks, TASK_COLUMNS),
            ("runs", data.runs, RUN_COLUMNS),
            ("task_status_events", data.status, STATUS_COLUMNS),
            ("assignments", data.assignments, ASSIGNMENT_COLUMNS),
        ):
            await conn.copy_records_to_table(table, records=rows, columns=columns)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return data


async def partitions_for(dsn: str, months: int) -> None:
    """Monthly partitions back to ``months`` months ago, so the load lands in its months'
    partitions as a year of writes would, not in the default partition."""
    today = datetime.now(UTC).date()
    conn = await asyncpg.connect(dsn)
    try:
        for table in PARTITIONED:
            have = await existing_months(conn, table)
            for back in range(months + 1):
                month = add_months(month_of(today), -back)
                if month not in have:
                    await create_month(conn, table, month)
    finally:
        await conn.close()
