"""Faults a user would otherwise never notice: each ends correct, or visible.

A tracker that died holding events, a poisonous message in a batch, a body too large for
a dead letter, a pull loop that crashes, an assignment before its task: the figures
converge to what was stored, the bad message alone is dead-lettered with its reason, and
``/healthz`` says so while a part is down.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml
from sqlalchemy import func, select

from tally import consumers, metrics
from tally.db.tables import (
    quota_ledger,
    run_events,
    runs,
    task_status_events,
    tasks,
    token_usage,
)
from tally.events import (
    ReserveReply,
    ReserveRequest,
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskCreated,
    TaskStatusChanged,
    UsageReply,
    UsageRequest,
    new_id,
)
from tally.events.tasks import Reservation
from tally.subjects import RUN_EVENT, TASK_STATUS_CHANGED

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
USAGE = {"input_tokens": 1_000, "output_tokens": 100}


def call(run_id: str, ws: str, i: int, **usage: Any) -> RunEvent:
    return RunEvent(
        run_id=run_id,
        workspace=ws,
        at=T0 + timedelta(seconds=i + 1),
        detail={
            "kind": "worker_call",
            "worker": "coder",
            "model": "claude-sonnet-4",
            "usage": usage or USAGE,
        },
    )


def start(run_id: str, ws: str, reservation_id: str | None = None) -> RunStarted:
    return RunStarted(
        run_id=run_id,
        task_id=f"task-{run_id}",
        workspace=ws,
        model="claude-sonnet-4",
        reservation_id=reservation_id,
        started_at=T0,
    )


def finish(run_id: str, ws: str, n: int | None) -> RunFinished:
    return RunFinished(
        run_id=run_id,
        task_id=f"task-{run_id}",
        workspace=ws,
        outcome="complete",
        success=True,
        finished_at=T0 + timedelta(minutes=30),
        event_count=n,
    )


async def health(app: AsgiFastStream) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://tally"
    ) as http:
        r = await http.get("/healthz")
        return r.status_code, r.json()


async def steal(h: Harness, base: str, service: str, n: int) -> None:
    """Fetch ``n`` messages from ``service``'s durable and never acknowledge them, as a
    process killed with -9 mid-write would: the server redelivers them after ack_wait."""
    sub = await h.client.js.pull_subscribe_bind(
        h.catalog.durable(service, base), h.catalog.stream_for(base)
    )
    got = 0
    while got < n:
        got += len(await sub.fetch(n - got, timeout=5))


async def totals(h: Harness, run_id: str) -> dict[str, Any] | None:
    return await h.scalar(select(runs.c.totals).where(runs.c.run_id == run_id))


@pytest.fixture
def subscriptions(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.yaml"
    team = {"name": "team", "kind": "payg", "limits": {"day": {"tokens": 1_000_000}}}
    path.write_text(yaml.safe_dump({"subscriptions": [team]}))
    return path


async def test_events_a_crashed_tracker_held_reach_the_totals_and_the_quota(
    harness: Harness, workspace: str, subscriptions: Path
) -> None:
    """Reproduces the drill: the finish is recorded before the events come back (after
    ack_wait); the late events re-total the run and quota settles the difference."""
    h = harness
    await h.start("tracker", ack_wait_s=3.0, settle_wait_s=0.3)
    await h.start("quota", subscriptions_path=subscriptions)
    reply = await h.client.request(
        ReserveRequest(
            subscription="team", tokens=50_000, cost_usd=0.0, reservation_id=f"res-{new_id()}"
        ),
        ReserveReply,
        step="quota",
    )
    assert reply.ok
    run_id = f"run-{new_id()}"
    await h.client.publish(start(run_id, workspace, reply.reservation_id))
    await h.eventually(lambda: h.scalar(select(runs.c.run_id).where(runs.c.run_id == run_id)))
    # The tracker is "killed" holding all ten worker calls: fetched, never acknowledged.
    await h.stop_all()
    for i in range(10):
        await h.client.publish(call(run_id, workspace, i))
    await steal(h, RUN_EVENT, "tracker", 10)
    await h.start("tracker", ack_wait_s=3.0, settle_wait_s=0.3)
    await h.start("quota", subscriptions_path=subscriptions)
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as recorded:
        await h.client.publish(finish(run_id, workspace, 10))
        first = await h.next_item(recorded, what="run.recorded")
        assert first.event_count == 0 and first.expected_events == 10  # loud: incomplete
        last = first
        while last.event_count < 10:
            last = await h.next_item(recorded, timeout=30, what="a re-totalled run.recorded")
    assert last.tokens.input_tokens == 10_000 and last.worker_calls == 10

    async def settled_tokens() -> int | None:
        rows = await h.rows(
            select(quota_ledger.c.op, quota_ledger.c.tokens).where(
                quota_ledger.c.reservation_id == reply.reservation_id,
                quota_ledger.c.op.in_(("settle", "resettle")),
            )
        )
        best = max((t for _, t in rows), default=None)
        return best if best == 11_000 else None

    assert await h.eventually(settled_tokens, timeout=20, what="the ledger to settle 11,000")
    stored = await h.scalar(
        select(func.sum(token_usage.c.input_tokens + token_usage.c.output_tokens)).where(
            token_usage.c.run_id == run_id
        )
    )
    assert stored == 11_000
    usage = await h.client.request(UsageRequest(), UsageReply, step="quota")
    team = next(s for s in usage.subscriptions if s["subscription"] == "team")
    assert team["day"]["used_tokens"] == 11_000


async def test_a_finish_waits_for_its_events_without_holding_a_handler(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker", ack_wait_s=2.0)
    run_id = f"run-{new_id()}"
    await h.client.publish(start(run_id, workspace))
    async with h.client.watch(RunRecorded, lambda r: r.run_id == run_id) as recorded:
        await h.client.publish(finish(run_id, workspace, 3))  # before its events
        for i in range(3):
            await h.client.publish(call(run_id, workspace, i))
        first = await h.next_item(recorded, what="run.recorded")
    assert (first.event_count, first.worker_calls, first.tokens.input_tokens) == (3, 3, 3_000)
    assert metrics.HANDLER_RETRIES.labels("tracker", "run.finished")._value.get() == 0


async def test_one_poisonous_event_is_dead_lettered_alone(harness: Harness, workspace: str) -> None:
    """A value Postgres refuses (a token count past bigint) sinks only its own row."""
    h = harness
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    async with h.dead_letters("tracker") as letters:
        events = [call(run_id, workspace, i) for i in range(40)]
        poison = call(run_id, workspace, 40, input_tokens=10**19, output_tokens=1)
        for e in [*events[:20], poison, *events[20:]]:
            await h.client.publish(e)
        # Bounds for a loaded machine: the batch fails, then 41 single-event writes follow.
        letter = await h.next_item(letters, timeout=45, what="the poisonous event's dead letter")
    assert json.loads(letter.payload)["event_id"] == poison.event_id
    await h.drained("tracker", RUN_EVENT, timeout=45)
    stored = await h.scalar(
        select(func.count()).select_from(run_events).where(run_events.c.run_id == run_id)
    )
    assert stored == 40


async def test_a_nul_character_is_refused_naming_the_field_and_the_batch_is_kept(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    # What a client on another stack may send: valid JSON, valid schema, a NUL inside.
    bad = call(run_id, workspace, 99).to_json().replace(b'"coder"', b'"coder\\u0000"')
    async with h.dead_letters("tracker") as letters:
        for i in range(20):
            await h.client.publish(call(run_id, workspace, i))
        await h.publish_raw(RUN_EVENT, bad, f"nul-{new_id()}")
        for i in range(20, 40):
            await h.client.publish(call(run_id, workspace, i))
        letter = await h.next_item(letters, what="the NUL event's dead letter")
    assert "NUL" in letter.error and "detail.worker" in letter.error
    await h.drained("tracker", RUN_EVENT)
    stored = await h.scalar(
        select(func.count()).select_from(run_events).where(run_events.c.run_id == run_id)
    )
    assert stored == 40


async def test_a_body_too_large_for_a_dead_letter_is_kept_whole(
    harness: Harness, workspace: str
) -> None:
    """600 kB of quotes doubles when escaped into a letter, past NATS's 1 MiB limit."""
    h = harness
    app = await h.start("tracker")
    body = b'"' * 600_000
    async with h.dead_letters("tracker") as letters:
        await h.publish_raw(RUN_EVENT, body, f"huge-{new_id()}")
        letter = await h.next_item(letters, what="the huge body's dead letter")
    assert letter.payload_size == 600_000
    assert letter.payload_sha256 == hashlib.sha256(body).hexdigest()
    assert letter.payload_ref is not None and len(letter.payload) < 100_000
    bucket, _, key = letter.payload_ref.partition("/")
    kept = await (await h.client.js.object_store(bucket)).get(key)
    assert kept.data == body
    # The consumer lives on: the next event is stored and health is green.
    run_id = f"run-{new_id()}"
    await h.client.publish(call(run_id, workspace, 0))
    await h.eventually(
        lambda: h.scalar(select(run_events.c.event_id).where(run_events.c.run_id == run_id))
    )
    status, _ = await health(app)
    assert status == 200


async def test_a_crashed_pull_loop_turns_health_red_and_comes_back(
    harness: Harness, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = harness
    app = await h.start("tracker")
    await h.eventually(lambda: _status_is(app, 200), what="a green /healthz")
    real_fetch = consumers.Puller.fetch
    broken = True

    async def fetch(self: consumers.Puller, batch: int, timeout: float) -> list[Any]:
        if broken:
            raise RuntimeError("simulated crash of the pull loop")
        return await real_fetch(self, batch, timeout)

    monkeypatch.setattr(consumers.Puller, "fetch", fetch)
    report = await h.eventually(lambda: _report_if(app, 503), what="a red /healthz")
    down = [c for c in report["consumers"] if not c["ok"]]
    assert down and "simulated crash" in (down[0]["error"] or "")
    broken = False
    report = await h.eventually(lambda: _report_if(app, 200), what="/healthz green again")
    assert max(c["restarts"] for c in report["consumers"]) >= 1
    # And it works again.
    run_id = f"run-{new_id()}"
    await h.client.publish(call(run_id, workspace, 0))
    await h.eventually(
        lambda: h.scalar(select(run_events.c.event_id).where(run_events.c.run_id == run_id))
    )


async def test_a_failing_quota_sweep_is_a_crash_health_and_metrics_show(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep that keeps failing (expired reservations never released) is not only a log
    line: the sweeper is restarted with back-off, counted, and /healthz names the error."""
    from services.quota import handlers as quota_handlers

    failing = True
    real_sweep = quota_handlers.sweep_once

    async def sweep_once(*args: Any) -> int:
        if failing:
            raise RuntimeError("simulated sweep failure")
        return await real_sweep(*args)

    monkeypatch.setattr(quota_handlers, "sweep_once", sweep_once)
    app = await harness.start("quota", sweep_interval_s=0.05)

    def sweeper(report: dict[str, Any]) -> dict[str, Any]:
        return next(t for t in report["tasks"] if t["task"] == "sweeper")

    async def crashed() -> dict[str, Any] | None:
        task = sweeper((await health(app))[1])
        return task if task["restarts"] >= 2 else None

    task = await harness.eventually(crashed, what="the failing sweeper restarted twice")
    assert "simulated sweep failure" in (task["last_error"] or "")
    restarts = metrics.CONSUMER_RESTARTS.labels("quota", "sweeper")._value.get()
    assert restarts >= 2
    failing = False

    async def green() -> bool:
        return (await health(app))[0] == 200

    await harness.eventually(green, what="/healthz green once sweeps succeed")


async def _status_is(app: AsgiFastStream, status: int) -> bool:
    return (await health(app))[0] == status


async def _report_if(app: AsgiFastStream, status: int) -> dict[str, Any] | None:
    got, report = await health(app)
    return report if got == status else None


async def test_an_assignment_before_its_task_is_not_a_retry(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    task_id = f"task-{new_id()}"
    retries = metrics.HANDLER_RETRIES.labels("tracker", "task.assigned")._value.get()
    await h.client.publish(
        TaskAssigned(
            task_id=task_id,
            workspace=workspace,
            model="claude-sonnet-4",
            provider="anthropic",
            assignment_id=f"{task_id}-a1",
            subscription="team",
            strategy="cheapest_capable",
            reservation=Reservation(
                reservation_id=f"res-{task_id}",
                subscription="team",
                tokens=1,
                cost_usd=0.0,
                expires_at=T0,
            ),
        )
    )
    await h.client.publish(TaskCreated(task_id=task_id, workspace=workspace, title="Late task"))

    async def assigned() -> str | None:
        return await h.scalar(select(tasks.c.model).where(tasks.c.task_id == task_id))

    assert await h.eventually(assigned, what="the assignment to land") == "claude-sonnet-4"
    assert metrics.HANDLER_RETRIES.labels("tracker", "task.assigned")._value.get() == retries


async def test_a_worker_call_with_invalid_usage_is_not_stored(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    bad = call(run_id, workspace, 0, input_tokens=-5, output_tokens=1)
    async with h.dead_letters("tracker") as letters:
        await h.client.publish(bad)
        await h.next_item(letters, what="the invalid usage's dead letter")
        await h.client.publish(call(run_id, workspace, 1))
        await h.drained("tracker", RUN_EVENT)
    ids = await h.rows(select(run_events.c.event_id).where(run_events.c.run_id == run_id))
    assert bad.event_id not in {i for (i,) in ids} and len(ids) == 1


async def test_a_second_body_under_a_known_event_id_is_a_dead_lettered_conflict(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    run_id = f"run-{new_id()}"
    first = call(run_id, workspace, 0)
    other = first.model_copy(update={"at": first.at + timedelta(seconds=5)})
    await h.client.publish(first)
    await h.drained("tracker", RUN_EVENT)
    async with h.dead_letters("tracker") as letters:
        await h.publish_raw(RUN_EVENT, other.to_json(), f"other-{new_id()}")
        letter = await h.next_item(letters, what="the conflict's dead letter")
    assert "different body" in letter.error
    at = await h.scalar(select(run_events.c.at).where(run_events.c.event_id == first.event_id))
    assert at == first.at  # the first body stays
    usage = await h.rows(select(token_usage.c.at).where(token_usage.c.event_id == first.event_id))
    assert usage == [(first.at,)]  # and its tokens are counted once


async def test_a_status_change_reusing_a_known_event_id_is_a_dead_lettered_conflict(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    first = TaskStatusChanged(
        task_id=f"task-{new_id()}", workspace=workspace, to_status="in_progress", changed_at=T0
    )
    await h.client.publish(first)
    await h.drained("tracker", TASK_STATUS_CHANGED)
    async with h.dead_letters("tracker") as letters:
        await h.redeliver(first)  # the same body again: not a conflict
        other = first.model_copy(update={"to_status": "completed"})
        await h.publish_raw(TASK_STATUS_CHANGED, other.to_json(), f"other-{new_id()}")
        letter = await h.next_item(letters, what="the conflict's dead letter")
        await h.drained("tracker", TASK_STATUS_CHANGED)
        assert letters.empty()
    assert "different body" in letter.error and '"completed"' in letter.payload
    kept = await h.scalar(
        select(task_status_events.c.to_status).where(
            task_status_events.c.event_id == first.event_id
        )
    )
    assert kept == "in_progress"


async def test_health_turns_red_while_a_server_the_service_needs_is_down(
    harness: Harness, tmp_path: Path, subscriptions: Path
) -> None:
    """Quota's /healthz names Redis while it is down, and is green again when it is back."""
    from tests.chaos.fleet import PrivateRedis

    redis = PrivateRedis(tmp_path)
    await redis.start()
    try:
        app = await harness.start("quota", redis_url=redis.url, subscriptions_path=subscriptions)
        status, report = await health(app)
        assert status == 200 and report["servers"] == {"postgres": True, "redis": True}
        redis.stop()
        report = await harness.eventually(lambda: _report_if(app, 503), what="a red /healthz")
        assert report["servers"] == {"postgres": True, "redis": False}
        await redis.start()
        await harness.eventually(lambda: _report_if(app, 200), what="/healthz green again")
    finally:
        redis.stop()
