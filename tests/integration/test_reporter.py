"""The reporter's HTTP API over a run the tracker recorded, against real NATS and Postgres."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from nats.aio.msg import Msg
from sqlalchemy import select

from tally.db.tables import runs
from tally.events import RunEvent, RunFinished, RunRecorded, RunStarted, new_id
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def test_a_recorded_run_has_a_ten_line_kpi_summary(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("tracker")
    reporter = await h.start("reporter")
    run_id, task_id = f"run-{new_id()}", f"task-{new_id()}"

    def ev(minutes: float, **detail: Any) -> RunEvent:
        return RunEvent(run_id=run_id, workspace=workspace, at=at(minutes), detail=detail)

    timeline = [
        ev(0, kind="phase_start", phase="implement"),
        ev(
            5,
            kind="worker_call",
            worker="coder",
            model="claude-sonnet-4",
            latency_ms=1_000,
            usage={"input_tokens": 1_000, "output_tokens": 400, "cache_read_input_tokens": 3_000},
        ),
        ev(
            9,
            kind="worker_call",
            worker="coder",
            model="claude-sonnet-4",
            latency_ms=3_000,
            usage={"input_tokens": 500, "output_tokens": 100},
        ),
        ev(
            12,
            kind="worker_call",
            worker="reviewer",
            model="gpt-5",
            provider="openai",
            latency_ms=2_000,
            usage={
                "prompt_tokens": 2_000,
                "completion_tokens": 300,
                "prompt_tokens_details": {"cached_tokens": 1_500},
            },
        ),
        ev(20, kind="phase_end", phase="implement"),
        ev(22, kind="verification", command="pytest -q", passed=True),
        ev(25, kind="checkpoint", verified=True, commit="abc123"),
        ev(
            26,
            kind="changes",
            files=["auth.py", "views.py", "auth.py"],
            lines_added=84,
            lines_removed=9,
        ),
        ev(27, kind="milestone", name="login works", status="completed"),
    ]
    live: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        live.put_nowait(json.loads(msg.data))

    sub = await h.client.nc.subscribe(h.catalog.metrics("runs"), cb=on_live)
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as recorded_q:
        for e in (
            RunStarted(run_id=run_id, task_id=task_id, workspace=workspace, started_at=T0),
            *timeline,
            RunFinished(
                run_id=run_id,
                task_id=task_id,
                workspace=workspace,
                outcome="complete",
                success=True,
                finished_at=at(30),
                event_count=len(timeline),
            ),
        ):
            await h.client.publish(e)
        await h.eventually(
            lambda: h.scalar(select(runs.c.finished_at).where(runs.c.run_id == run_id)),
            what="the tracker to record the run",
        )
        recorded = await h.next_item(recorded_q, what="run.recorded")
    # Dashboards hear about the run live on metrics.runs.
    update = await h.next_item(live, what="the metrics.runs message")
    await sub.unsubscribe()
    assert update["run_id"] == run_id and update["tokens"] == 7_300

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        response = await http.get(f"/runs/{run_id}/kpi")
        missing = await http.get(f"/runs/run-{new_id()}/kpi")

    assert response.status_code == 200
    body = response.json()
    assert body["finished"] is True and body["outcome"] == "complete"
    summary, kpi = body["summary"], body["kpi"]
    assert len(summary) == 10
    assert summary[0] == "Total time: 30m 00s"
    assert summary[1] == "Time to first verified checkpoint: 25m 00s"
    assert summary[3].startswith("Worker calls: 3 ")
    assert "Verification: 1 check, 1 passed" in summary[7]
    assert summary[8] == "Changes: 2 files, +84/-9 lines"
    assert summary[9] == "Milestones: 1/1 completed"
    assert kpi["worker_calls"] == 3
    # Normalised by the tracker: OpenAI's cached prompt tokens are not counted as input.
    assert kpi["tokens"]["input_tokens"] == 1_000 + 500 + 500
    assert kpi["tokens"]["cache_read_tokens"] == 3_000 + 1_500
    assert kpi["tokens"]["output_tokens"] == 400 + 100 + 300
    assert kpi["tokens_by_worker"]["coder"]["input_tokens"] == 1_500
    assert kpi["latency_mean_ms"] == pytest.approx(2_000)
    # Money: exact micro-dollars and a rounded display string, never a long float.
    assert isinstance(kpi["cost_micros"], int) and kpi["cost_micros"] > 0
    assert kpi["cost_usd"] == f"{kpi['cost_micros'] / 1_000_000:.4f}"

    assert missing.status_code == 404
    error = missing.json()["error"]
    assert error["code"] == "not_found" and "not found" in error["message"]

    # Every figure of run.recorded is the report's figure for the same run.
    assert recorded.worker_calls == kpi["worker_calls"]
    assert recorded.verifications_passed == kpi["verifications_passed"] == 1
    assert recorded.event_count == recorded.expected_events == len(timeline)
    assert recorded.actual_hours == pytest.approx(kpi["total_seconds"] / 3600)
    assert recorded.cost_micros == kpi["cost_micros"] > 0
    t = recorded.tokens
    assert (t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_tokens) == (
        kpi["tokens"]["input_tokens"],
        kpi["tokens"]["output_tokens"],
        kpi["tokens"]["cache_read_tokens"],
        kpi["tokens"]["cache_write_tokens"],
    )
    assert t.reasoning_tokens == kpi["tokens"]["reasoning_tokens"]
