"""The tracker against real NATS and Postgres: every event stored once, totals that add up."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import func, select

from tally import metrics
from tally.db.tables import run_events, runs, task_status_events, tasks, token_usage
from tally.events import (
    Estimate,
    Event,
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskCreated,
    TaskEstimated,
    TaskStatusChanged,
    TokenEstimate,
    new_id,
)
from tally.settings import CONFIG_DIR

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

#: An OpenAI chat completion's usage: 9,000 of the 12,000 prompt tokens came from the cache.
OPENAI_CHAT_USAGE = {
    "prompt_tokens": 12_000,
    "completion_tokens": 800,
    "total_tokens": 12_800,
    "prompt_tokens_details": {"cached_tokens": 9_000},
    "completion_tokens_details": {"reasoning_tokens": 300},
}
#: An Anthropic message's usage: cache reads and writes are reported beside the input.
ANTHROPIC_USAGE = {
    "input_tokens": 500,
    "output_tokens": 200,
    "cache_read_input_tokens": 2_000,
    "cache_creation_input_tokens": 100,
}


def prices(model: str) -> dict[str, float]:
    """USD per million tokens of ``model``, from the shipped registry."""
    registry = yaml.safe_load((CONFIG_DIR / "models.yaml").read_text())
    return next(m["prices"] for m in registry["models"] if m["name"] == model)


def count(table: Any, **where: str) -> Any:
    return (
        select(func.count())
        .select_from(table)
        .where(*(table.c[col] == value for col, value in where.items()))
    )


async def publish_twice(h: Harness, *events: Event) -> None:
    """Publish each event twice with its id (JetStream drops the copy), then deliver a third
    copy under another message id, so the tracker itself must recognise it."""
    for e in events:
        assert await h.client.publish(e)
        assert not await h.client.publish(e)
        await h.redeliver(e)


def event(run_id: str, ws: str, minutes: float, **detail: Any) -> RunEvent:
    return RunEvent(run_id=run_id, workspace=ws, at=T0 + timedelta(minutes=minutes), detail=detail)


async def test_a_run_is_recorded_once_with_totals_that_add_up(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    task_id, run_id = f"task-{new_id()}", f"run-{new_id()}"
    await h.start("tracker")

    created = TaskCreated(
        task_id=task_id, workspace=ws, title="Add OAuth login", labels=("backend",)
    )
    estimated = TaskEstimated(
        task_id=task_id,
        workspace=ws,
        estimate=Estimate(
            task_id=task_id,
            title="Add OAuth login",
            priority="P2",
            task_type="feature",
            story_points=5,
            band="medium",
            hours_p50=1.6,
            hours_p90=3.0,
            tokens=TokenEstimate(input_tokens=10_000, output_tokens=2_000),
            value_score=40,
        ),
    )
    await publish_twice(h, created, estimated)
    # Velocity is measured against the estimate, so it must be on the task first.
    await h.eventually(
        lambda: h.scalar(select(tasks.c.story_points).where(tasks.c.task_id == task_id)),
        what="the estimate on the task row",
    )

    started = RunStarted(
        run_id=run_id,
        task_id=task_id,
        workspace=ws,
        model="gpt-5",
        provider="openai",
        started_at=T0,
    )
    timeline = [
        event(run_id, ws, 1, kind="phase_start", phase="implement"),
        event(run_id, ws, 2, kind="subtask_started", subtask="callback endpoint"),
        event(
            run_id,
            ws,
            10,
            kind="worker_call",
            worker="coder",
            model="gpt-5",
            provider="openai",
            usage=OPENAI_CHAT_USAGE,
            latency_ms=4_200,
        ),
        event(
            run_id,
            ws,
            20,
            kind="worker_call",
            worker="reviewer",
            model="claude-sonnet-4",
            provider="anthropic",
            usage=ANTHROPIC_USAGE,
            latency_ms=1_800,
        ),
        event(run_id, ws, 40, kind="subtask_completed", subtask="callback endpoint", quality=0.8),
        event(run_id, ws, 45, kind="changes", files=["auth.py", "views.py"], lines_added=120),
        event(run_id, ws, 50, kind="phase_end", phase="implement"),
    ]
    finished = RunFinished(
        run_id=run_id,
        task_id=task_id,
        workspace=ws,
        outcome="complete",
        success=True,
        finished_at=T0 + timedelta(hours=2),
        event_count=len(timeline),
    )

    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as recorded_q:
        await publish_twice(h, started, *timeline, finished)
        recorded = await h.next_item(recorded_q, what="run.recorded")
        await h.drained("tracker", "run.event")
        await h.drained("tracker", "run.finished")
        await h.client.nc.flush()
        # A second run.finished re-announces the same record: same id, so consumers
        # (learner, quota) drop it, and the same totals.
        while not recorded_q.empty():
            again = recorded_q.get_nowait()
            assert again.model_dump(exclude={"occurred_at"}) == recorded.model_dump(
                exclude={"occurred_at"}
            )

    # Exactly one row per event, though each arrived three times.
    assert await h.scalar(count(tasks, task_id=task_id)) == 1
    assert await h.scalar(count(runs, run_id=run_id)) == 1
    assert await h.scalar(count(run_events, run_id=run_id)) == len(timeline)
    assert await h.scalar(count(token_usage, run_id=run_id)) == 2
    # The calls came keyed by run; once it finished they are the task's too.
    assert await h.scalar(count(token_usage, task_id=task_id)) == 2

    # Tokens by kind, by hand: OpenAI's prompt total includes its cached part.
    assert recorded.tokens.input_tokens == (12_000 - 9_000) + 500
    assert recorded.tokens.cache_read_tokens == 9_000 + 2_000
    assert recorded.tokens.cache_write_tokens == 100
    assert recorded.tokens.output_tokens == 800 + 200
    assert recorded.tokens.reasoning_tokens == 300
    gpt, sonnet = prices("gpt-5"), prices("claude-sonnet-4")
    cost = (3_000 * gpt["input"] + 9_000 * gpt["cached_input"] + 800 * gpt["output"]) / 1e6 + (
        500 * sonnet["input"]
        + 2_000 * sonnet["cached_input"]
        + 100 * sonnet["cache_write"]
        + 200 * sonnet["output"]
    ) / 1e6
    assert recorded.cost_usd == pytest.approx(cost, abs=1e-6)
    assert recorded.cost_micros == round(cost * 1e6)
    assert recorded.unpriced_tokens.total == 0

    # Prometheus counts each stored token and dollar once, by model, provider, workspace.
    tracker_metrics = metrics.registry_for("tracker")

    def counted(name: str, **labels: str) -> float | None:
        return tracker_metrics.get_sample_value(name, {**labels, "workspace": ws})

    gpt5, sonnet4 = (
        {"model": "gpt-5", "provider": "openai"},
        {
            "model": "claude-sonnet-4",
            "provider": "anthropic",
        },
    )
    assert counted("tally_tokens_total", kind="input", **gpt5) == 3_000
    assert counted("tally_tokens_total", kind="cache_read", **gpt5) == 9_000
    assert counted("tally_tokens_total", kind="output", **gpt5) == 800
    assert counted("tally_tokens_total", kind="cache_read", **sonnet4) == 2_000
    assert counted("tally_tokens_total", kind="cache_write", **sonnet4) == 100
    dollars = [counted("tally_cost_usd_total", **m) for m in (gpt5, sonnet4)]
    assert sum(d or 0 for d in dollars) == pytest.approx(recorded.cost_usd, abs=1e-6)
    assert recorded.actual_hours == pytest.approx(2.0)
    assert recorded.subtask_hours == {"callback endpoint": pytest.approx(38 / 60, abs=1e-6)}
    assert recorded.story_points == 5
    assert recorded.velocity == pytest.approx(5 / 2.0)
    assert recorded.estimation_error == pytest.approx((2.0 - 1.6) / 1.6, abs=1e-6)
    assert recorded.band == "medium" and recorded.task_type == "feature"
    assert recorded.model == "gpt-5" and recorded.worker_calls == 2
    assert recorded.quality_score == pytest.approx(0.8)
    assert recorded.event_count == len(timeline)

    # What a user reads back from Postgres agrees with the event.
    openai_row = (
        await h.rows(
            select(token_usage).where(
                token_usage.c.run_id == run_id, token_usage.c.provider == "openai"
            )
        )
    )[0]
    assert openai_row.input_tokens == 3_000 and openai_row.cache_read_tokens == 9_000
    assert openai_row.cost_known is True
    assert openai_row.cost_micros == round(
        3_000 * gpt["input"] + 9_000 * gpt["cached_input"] + 800 * gpt["output"]
    )
    run = (await h.rows(select(runs).where(runs.c.run_id == run_id)))[0]
    assert run.outcome == "complete" and run.success is True
    assert run.totals["tokens"]["cache_read_tokens"] == 11_000
    task = (await h.rows(select(tasks).where(tasks.c.task_id == task_id)))[0]
    assert task.completed_at == finished.finished_at and task.actual_hours == pytest.approx(2.0)


async def test_an_event_before_its_run_started_is_kept_and_linked(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    run_id = f"run-{new_id()}"
    await h.start("tracker")
    early = event(
        run_id,
        ws,
        5,
        kind="worker_call",
        model="gpt-5",
        provider="openai",
        usage=OPENAI_CHAT_USAGE,
    )
    await h.client.publish(early)
    await h.eventually(
        lambda: h.scalar(count(run_events, run_id=run_id)), what="the early event's row"
    )
    assert await h.scalar(count(runs, run_id=run_id)) == 0

    task_id = f"task-{new_id()}"
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as recorded_q:
        await h.client.publish(
            RunStarted(run_id=run_id, task_id=task_id, workspace=ws, model="gpt-5", started_at=T0)
        )
        await h.client.publish(
            RunFinished(
                run_id=run_id,
                task_id=task_id,
                workspace=ws,
                outcome="complete",
                success=True,
                finished_at=T0 + timedelta(minutes=30),
                event_count=1,
            )
        )
        recorded = await h.next_item(recorded_q, what="run.recorded")
    assert recorded.worker_calls == 1 and recorded.event_count == 1
    assert recorded.tokens.total == 12_000 + 800
    assert recorded.actual_hours == pytest.approx(0.5)


async def test_a_malformed_run_event_is_dead_lettered_and_the_rest_go_on(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    run_id = f"run-{new_id()}"
    await h.start("tracker")
    good = event(run_id, ws, 1, kind="phase_start", phase="plan")
    base = json.loads(good.to_json())
    negative_latency = {
        **base,
        "event_id": f"bad-latency-{new_id()}",
        "detail": {"kind": "worker_call", "model": "gpt-5", "latency_ms": -5},
    }
    backwards = {
        **base,
        "event_id": f"bad-times-{new_id()}",
        "detail": {
            "kind": "worker_call",
            "started_at": (T0 + timedelta(minutes=2)).isoformat(),
            "finished_at": (T0 + timedelta(minutes=1)).isoformat(),
        },
    }
    async with h.dead_letters("tracker") as letters:
        for bad in (negative_latency, backwards):
            await h.publish_raw("run.event", json.dumps(bad).encode(), bad["event_id"])
        await h.client.publish(good)
        got = {}
        for _ in range(2):
            letter = await h.next_item(letters, what="a dead letter")
            got[json.loads(letter.payload)["event_id"]] = letter

    assert set(got) == {negative_latency["event_id"], backwards["event_id"]}
    assert all(letter.subject == "run.event" for letter in got.values())
    assert "latency_ms" in got[negative_latency["event_id"]].error
    assert "finished_at is before started_at" in got[backwards["event_id"]].error
    # The consumer kept going: the good event is stored, the bad ones are not.
    await h.eventually(
        lambda: h.scalar(select(run_events.c.kind).where(run_events.c.event_id == good.event_id)),
        what="the good event's row",
    )
    assert await h.scalar(count(run_events, run_id=run_id)) == 1


async def test_status_changes_are_kept_and_the_task_follows_the_latest(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    task_id = f"task-{new_id()}"
    await h.start("tracker")
    await h.client.publish(TaskCreated(task_id=task_id, workspace=ws, title="Ship the lanes"))
    await h.eventually(lambda: h.scalar(count(tasks, task_id=task_id)), what="the task's row")

    def change(frm: str | None, to: str, minutes: int) -> TaskStatusChanged:
        return TaskStatusChanged(
            task_id=task_id,
            workspace=ws,
            from_status=frm,
            to_status=to,  # type: ignore[arg-type]
            changed_at=T0 + timedelta(minutes=minutes),
            agent_id="agent-7",
        )

    moves = [
        change("backlog", "in_progress", 10),
        change("in_progress", "ready_to_review", 70),
        change("ready_to_review", "ready_to_qa", 95),
    ]
    await publish_twice(h, *moves)
    await h.drained("tracker", "task.status_changed")
    stored = await h.rows(
        select(task_status_events.c.to_status, task_status_events.c.agent_id)
        .where(task_status_events.c.task_id == task_id)
        .order_by(task_status_events.c.changed_at)
    )
    assert [(s.to_status, s.agent_id) for s in stored] == [
        ("in_progress", "agent-7"),
        ("ready_to_review", "agent-7"),
        ("ready_to_qa", "agent-7"),
    ]
    assert await h.scalar(select(tasks.c.status).where(tasks.c.task_id == task_id)) == (
        "ready_to_qa"
    )

    # A transition that happened earlier but arrives late is kept, and does not move the
    # task back: the task's status is that of its latest transition.
    await h.client.publish(change("in_progress", "blocked", 30))
    await h.drained("tracker", "task.status_changed")
    assert await h.scalar(count(task_status_events, task_id=task_id)) == 4
    assert await h.scalar(select(tasks.c.status).where(tasks.c.task_id == task_id)) == (
        "ready_to_qa"
    )


async def test_a_status_change_before_its_task_still_sets_the_status(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    task_id = f"task-{new_id()}"
    await h.start("tracker")
    await h.client.publish(
        TaskStatusChanged(
            task_id=task_id,
            workspace=ws,
            from_status="backlog",
            to_status="in_progress",
            changed_at=T0,
        )
    )
    await h.eventually(
        lambda: h.scalar(count(task_status_events, task_id=task_id)), what="the status row"
    )
    await h.client.publish(TaskCreated(task_id=task_id, workspace=ws, title="Arrives late"))
    await h.eventually(
        lambda: h.scalar(
            select(tasks.c.status).where(tasks.c.task_id == task_id, tasks.c.status != "backlog")
        ),
        what="the task to take its recorded status",
    )
    assert await h.scalar(select(tasks.c.status).where(tasks.c.task_id == task_id)) == (
        "in_progress"
    )
