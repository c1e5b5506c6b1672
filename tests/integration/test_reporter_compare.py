"""Two runs the tracker recorded, compared side by side and exported by the reporter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select

from tally.db.tables import runs
from tally.events import Event, RunEvent, RunFinished, RunStarted, new_id
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def recorded_run(
    workspace: str,
    task_id: str,
    *,
    start: float,
    minutes: float,
    calls: list[tuple[str, int, int]],
    outcome: str = "complete",
) -> tuple[str, list[Event]]:
    """A run's events: one phase with a worker call ``(worker, input, output)`` a minute."""
    run_id = f"run-{new_id()}"

    def ev(offset: float, **detail: Any) -> RunEvent:
        return RunEvent(run_id=run_id, workspace=workspace, at=at(start + offset), detail=detail)

    timeline = [
        ev(0, kind="phase_start", phase="implement"),
        *(
            ev(
                1 + i,
                kind="worker_call",
                worker=worker,
                model="claude-sonnet-4",
                latency_ms=1_000,
                usage={"input_tokens": inp, "output_tokens": out},
            )
            for i, (worker, inp, out) in enumerate(calls)
        ),
        ev(minutes - 1, kind="phase_end", phase="implement"),
    ]
    return run_id, [
        RunStarted(run_id=run_id, task_id=task_id, workspace=workspace, started_at=at(start)),
        *timeline,
        RunFinished(
            run_id=run_id,
            task_id=task_id,
            workspace=workspace,
            outcome=outcome,  # type: ignore[arg-type]
            success=outcome == "complete",
            finished_at=at(start + minutes),
            event_count=len(timeline),
        ),
    ]


async def test_two_recorded_runs_compare_side_by_side_and_export(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    reporter = await h.start("reporter")
    task_id = f"task-{new_id()}"
    slow, slow_events = recorded_run(
        workspace,
        task_id,
        start=0,
        minutes=40,
        calls=[("coder", 1_000, 200), ("coder", 2_000, 300), ("reviewer", 500, 100)],
        outcome="error",
    )
    fast, fast_events = recorded_run(
        workspace, task_id, start=60, minutes=25, calls=[("coder", 1_200, 250), ("coder", 800, 50)]
    )
    for event in [*slow_events, *fast_events]:
        await h.client.publish(event)
    for run_id in (slow, fast):
        await h.eventually(
            lambda run_id=run_id: h.scalar(
                select(runs.c.finished_at).where(runs.c.run_id == run_id)
            ),
            what=f"the tracker to record {run_id}",
        )

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        compared = await http.get("/compare", params={"a": slow, "b": fast})
        single = await http.get(f"/runs/{fast}/kpi")
        no_b = await http.get("/compare", params={"a": slow})
        unknown = f"run-{new_id()}"
        missing = await http.get("/compare", params={"a": slow, "b": unknown})
        usage = await http.get(
            "/export/token_usage", params={"workspace": workspace, "task_id": task_id}
        )
        failed = await http.get("/export/runs", params={"workspace": workspace, "outcome": "error"})

    assert compared.status_code == 200, compared.text
    body = compared.json()
    # Each side is what the run's own KPI endpoint says.
    assert body["b"] == single.json()
    assert body["a"]["outcome"] == "error" and body["b"]["outcome"] == "complete"
    assert body["a"]["summary"][0] == "Total time: 40m 00s"
    assert body["b"]["summary"][0] == "Total time: 25m 00s"
    deltas = body["deltas"]
    assert deltas["total_seconds"] == {"a": 2400, "b": 1500, "delta": -900, "ratio": 0.625}
    assert deltas["worker_calls"]["delta"] == -1
    assert deltas["tokens.input_tokens"] == {
        "a": 3_500,
        "b": 2_000,
        "delta": -1_500,
        "ratio": 0.571429,
    }
    assert deltas["tokens.output_tokens"]["delta"] == 300 - 600
    assert deltas["phases.implement.seconds"]["delta"] == (24 - 39) * 60
    # The reviewer worked only in the first run: nothing to subtract from.
    reviewer = deltas["tokens_by_worker.reviewer.input_tokens"]
    assert reviewer == {"a": 500, "b": None, "delta": None, "ratio": None}
    rows = {row["metric"]: row for row in body["rows"]}
    assert rows["total time"] == {
        "metric": "total time",
        "a": "40m 00s",
        "b": "25m 00s",
        "delta": "-15m 00s",
    }
    assert rows["worker calls"]["delta"] == "-1"

    assert no_b.status_code == 400 and no_b.json()["error"]["field"] == "b"
    assert missing.status_code == 404 and unknown in missing.json()["error"]["message"]
    assert slow not in missing.json()["error"]["message"]
    assert missing.json()["error"]["field"] == "b"

    # Worker calls are stored by run; filtering by task finds both runs' calls.
    assert usage.status_code == 200
    calls = usage.json()["rows"]
    assert [(r["run_id"], r["input_tokens"]) for r in calls] == [
        (slow, 1_000),
        (slow, 2_000),
        (slow, 500),
        (fast, 1_200),
        (fast, 800),
    ]
    assert [r["run_id"] for r in failed.json()["rows"]] == [slow]
