"""``/lanes`` measured in SQL gives what the lane rules in Python give over every event."""

from __future__ import annotations

import random
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import insert

from services.reporter.flow import lanes_view, read_flow
from services.reporter.lanes import (
    BLOCKED,
    LANES,
    StatusEvent,
    finished_lane_hours,
    lane_etas,
    lane_stats,
    work_in_progress,
)
from tally.db.tables import task_status_events, tasks
from tally.events import new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
STATUSES = ("in_progress", "ready_to_review", "ready_to_qa", "completed", "blocked", "backlog")


def random_flows(workspace: str, n: int, seed: int) -> list[StatusEvent]:
    """``n`` tasks wandering between statuses over the last 60 days (re-entries, blocks,
    moves back, some still open, a few moves at the same instant)."""
    rnd = random.Random(seed)
    events = []
    for i in range(n):
        at = NOW - timedelta(days=rnd.uniform(1, 60))
        previous = "backlog"
        for _ in range(rnd.randrange(1, 8)):
            status = rnd.choice(STATUSES)
            if rnd.random() > 0.1:  # else: the same instant as the move before
                at += timedelta(hours=rnd.uniform(0.1, 30))
            if at >= NOW:
                break
            events.append(StatusEvent(f"{workspace}-t{i}", previous, status, at))
            previous = status
    return events


def reference(events: list[StatusEvent], since: datetime) -> dict[str, Any]:
    """The report computed by the Python rules over every event (as /lanes once did)."""
    finished = finished_lane_hours(events, since)
    wip = work_in_progress(events, NOW)
    etas = lane_etas(events, NOW, since=since)
    return {
        "lanes": {
            lane: (asdict(lane_stats(finished[lane])), len(wip[lane]), sum(wip[lane].values()))
            for lane in (*LANES, BLOCKED)
        },
        "etas": {task: asdict(e) for task, e in etas.items()},
    }


def assert_same_report(view: dict[str, Any], want: dict[str, Any], label: object) -> None:
    """``view`` (a /lanes report with every ETA) says what ``want`` (:func:`reference`) does,
    to the hundredth of an hour the report rounds to."""
    for lane, (stats, wip, wip_hours) in want["lanes"].items():
        got = view["lanes"][lane]
        assert got["count"] == stats["count"] and got["wip"] == wip, (label, lane)
        for key in ("mean_hours", "p50_hours", "p85_hours", "total_hours"):
            expected = stats[key]
            assert got[key] == pytest.approx(
                None if expected is None else round(expected, 2), abs=0.011
            ), (label, lane, key)
        assert got["wip_hours"] == pytest.approx(round(wip_hours, 2), abs=0.011)
    got_etas = {e["task_id"]: e for e in view["etas"]}
    assert set(got_etas) == set(want["etas"]), label
    assert view["etas_total"] == len(want["etas"]), label
    for task, e in want["etas"].items():
        got = got_etas[task]
        assert (got["lane"], got["blocked"], got["overdue"], got["wip_ahead"]) == (
            e["lane"],
            e["blocked"],
            e["overdue"],
            e["wip_ahead"],
        ), (label, task)
        for key in ("spent_hours", "queue_hours", "eta_hours", "downstream_hours"):
            value = e[key]
            expected = None if value is None else pytest.approx(round(value, 2), abs=0.011)
            assert got[key] == expected, (label, task, key)


async def test_sql_lanes_equal_the_python_rules(harness: Harness) -> None:
    workspace = f"lanes-{new_id()[:8]}"
    events = random_flows(workspace, 150, seed=11)
    # Events are stored in an order of their own; ties are broken by event id.
    rows = [
        {
            "event_id": f"{e.task_id}-{j:03d}",
            "task_id": e.task_id,
            "workspace": workspace,
            "from_status": e.from_status,
            "to_status": e.to_status,
            "changed_at": e.at,
        }
        for j, e in enumerate(events)
    ]
    rnd = random.Random(3)
    rnd.shuffle(rows)
    await harness.execute(insert(task_status_events), rows)
    ordered = sorted(rows, key=lambda r: (r["changed_at"], r["event_id"]))
    latest = {r["task_id"]: r["to_status"] for r in ordered}
    await harness.execute(
        insert(tasks),
        [
            {"task_id": t, "workspace": workspace, "title": t, "priority": "P2",
             "status": status, "event_id": f"{t}-created"}
            for t, status in latest.items()
        ],
    )  # fmt: skip
    stored = [
        StatusEvent(r["task_id"], r["from_status"], r["to_status"], r["changed_at"])
        for r in ordered
    ]
    for since in (NOW - timedelta(days=30), NOW - timedelta(days=7), NOW - timedelta(days=90)):
        want = reference(stored, since)
        view = lanes_view(await read_flow(harness.engine, since, workspace), since, NOW)
        assert_same_report(view, want, since)


async def test_lanes_hold_more_open_tasks_than_a_statement_has_parameters(
    harness: Harness,
) -> None:
    """The defect: each open task id was its own query parameter, and past 32,767 open
    tasks (asyncpg's limit) /lanes answered 500."""
    workspace = f"wip-{new_id()[:8]}"
    n = 33_000
    await harness.execute(
        insert(tasks),
        [
            {"task_id": f"{workspace}-{i}", "workspace": workspace, "title": "t",
             "priority": "P2", "status": "in_progress", "event_id": f"{workspace}-{i}-c"}
            for i in range(n)
        ],
    )  # fmt: skip
    await harness.execute(
        insert(task_status_events),
        [
            {"event_id": f"{workspace}-{i}-s", "task_id": f"{workspace}-{i}",
             "workspace": workspace, "from_status": "backlog", "to_status": "in_progress",
             "changed_at": NOW - timedelta(days=40)}
            for i in range(0, n, 1000)
        ],
    )  # fmt: skip
    since = NOW - timedelta(days=7)
    view = lanes_view(await read_flow(harness.engine, since, workspace), since, NOW)
    assert view["lanes"]["work"]["wip"] == n // 1000
