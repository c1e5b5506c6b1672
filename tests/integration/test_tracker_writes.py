"""How the tracker's batches reach Postgres and leave NATS, against the real servers.

The pull loop must hand over what the server has at once, keep what arrives late, and
redeliver a batch whose handler failed; the COPY path must store a batch that holds
already-stored events exactly once, and go on storing the batches after it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError

from services.tracker import rows
from services.tracker.repo import Records, TrackerRepo
from tally.consumers import BatchConsumer, Puller
from tally.db.tables import run_events, token_usage
from tally.events import RunEvent, new_id
from tally.events.runs import WorkerCall
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR
from tally.subjects import RUN_EVENT

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ANTHROPIC_USAGE = {
    "input_tokens": 500,
    "output_tokens": 200,
    "cache_read_input_tokens": 2_000,
    "cache_creation_input_tokens": 100,
}


def timeline(run_id: str, ws: str, n: int) -> list[RunEvent]:
    """``n`` events of one run: every other one a worker call with Anthropic usage."""
    events = []
    for i in range(n):
        detail: dict[str, Any] = (
            {"kind": "worker_call", "model": "claude-sonnet-4", "usage": ANTHROPIC_USAGE}
            if i % 2
            else {"kind": "phase_start", "phase": f"step-{i}"}
        )
        events.append(
            RunEvent(run_id=run_id, workspace=ws, at=T0 + timedelta(seconds=i), detail=detail)
        )
    return events


def records(events: list[RunEvent]) -> tuple[Records, Records]:
    prices = rows.BatchPrices(ModelRegistry(CONFIG_DIR / "models.yaml"))
    usage = [
        rows.usage_record(e, e.detail, prices) for e in events if isinstance(e.detail, WorkerCall)
    ]
    return (
        (run_events, rows.EVENT_COLUMNS, [rows.event_record(e) for e in events]),
        (token_usage, rows.USAGE_COLUMNS, usage),
    )


async def stored(h: Harness, run_id: str) -> tuple[int, int, int]:
    """Rows of the run in run_events and token_usage, and its total output tokens."""
    return (
        await h.scalar(select(func.count()).where(run_events.c.run_id == run_id)),
        await h.scalar(select(func.count()).where(token_usage.c.run_id == run_id)),
        await h.scalar(
            select(func.coalesce(func.sum(token_usage.c.output_tokens), 0)).where(
                token_usage.c.run_id == run_id
            )
        ),
    )


async def test_a_batch_holding_stored_events_is_stored_once_and_later_batches_still_land(
    harness: Harness, workspace: str
) -> None:
    h, run_id = harness, f"run-{new_id()}"
    events = timeline(run_id, workspace, 30)
    repo = TrackerRepo(h.engine)
    try:
        # What each call reports as new is what token counters count: once per row.
        new = await repo.copy_many(*records(events[:10]))
        assert await stored(h, run_id) == (10, 5, 5 * 200)
        assert [len(n) for n in new] == [10, 5]

        # A redelivered batch: half of it stored already, and one event twice over.
        new = await repo.copy_many(*records([*events[5:20], events[15]]))
        assert await stored(h, run_id) == (20, 10, 10 * 200)
        assert [sorted(r[0] for r in n) for n in new] == [
            sorted(e.event_id for e in events[10:20]),
            sorted(e.event_id for e in events[10:20] if e.detail.kind == "worker_call"),
        ]

        new = await repo.copy_many(*records(events[20:]))
        assert await stored(h, run_id) == (30, 15, 15 * 200)
        assert [len(n) for n in new] == [10, 5]

        # The whole timeline once more changes nothing.
        assert [len(n) for n in await repo.copy_many(*records(events))] == [0, 0]
        assert await stored(h, run_id) == (30, 15, 15 * 200)
    finally:
        await repo.close()


async def test_a_worker_call_id_reused_under_another_time_keeps_the_stored_rows(
    harness: Harness, workspace: str
) -> None:
    h, run_id = harness, f"run-{new_id()}"
    events = timeline(run_id, workspace, 6)  # worker calls at 1, 3 and 5
    repo = TrackerRepo(h.engine)
    try:
        await repo.copy_many(*records(events[:2]))
        # The call's id again, a minute later and with other counts, beside new events.
        again = events[1].model_copy(update={"at": events[1].at + timedelta(minutes=1)})
        new = await repo.copy_many(*records([again, *events[2:]]))
        assert [sorted(r[0] for r in n) for n in new] == [
            sorted(e.event_id for e in events[2:]),
            sorted(e.event_id for e in events[3::2]),
        ]
        for table in (run_events, token_usage):
            stored_at = await h.rows(
                select(table.c.at).where(table.c.event_id == events[1].event_id)
            )
            assert stored_at == [(events[1].at,)]
        assert await stored(h, run_id) == (6, 3, 3 * 200)
    finally:
        await repo.close()


async def test_a_worker_call_reusing_the_id_of_another_stored_event_adds_no_tokens(
    harness: Harness, workspace: str
) -> None:
    """The stored event keeps its id (the call is a conflict, dead-lettered by the
    handler): its usage row must not be stored either, or its tokens would count."""
    h, run_id = harness, f"run-{new_id()}"
    events = timeline(run_id, workspace, 4)  # worker calls at 1 and 3
    repo = TrackerRepo(h.engine)
    try:
        await repo.copy_many(*records(events[:1]))  # a phase start, stored
        call = events[1].model_copy(
            update={"event_id": events[0].event_id, "at": events[1].at + timedelta(minutes=1)}
        )
        new = await repo.copy_many(*records([call, *events[2:]]))
        assert [sorted(r[0] for r in n) for n in new] == [
            sorted(e.event_id for e in events[2:]),
            [events[3].event_id],
        ]
        assert await stored(h, run_id) == (3, 1, 200)
    finally:
        await repo.close()


async def test_a_usage_row_stored_alone_keeps_its_time_when_its_id_comes_again(
    harness: Harness, workspace: str
) -> None:
    h, run_id = harness, f"run-{new_id()}"
    events = timeline(run_id, workspace, 4)
    repo = TrackerRepo(h.engine)
    try:
        # A usage row whose event is not in run_events (say, its month was dropped there).
        _, usage = records(events[1:2])
        await repo.copy_many(usage)
        again = events[1].model_copy(update={"at": events[1].at + timedelta(minutes=1)})
        await repo.copy_many(*records([events[0], again, *events[2:]]))
        stored_at = await h.rows(
            select(token_usage.c.at).where(token_usage.c.event_id == events[1].event_id)
        )
        assert stored_at == [(events[1].at,)]
        assert await stored(h, run_id) == (4, 2, 2 * 200)
    finally:
        await repo.close()


async def consumer_of(h: Harness) -> tuple[str, str]:
    """A fresh durable pull consumer on the run events of the test's namespace."""
    stream, durable = h.catalog.stream_for(RUN_EVENT), f"test-{new_id()[:8]}"
    await h.client.js.add_consumer(
        stream, durable_name=durable, filter_subject=h.catalog.subject(RUN_EVENT)
    )
    return stream, durable


async def test_fetch_hands_over_what_is_there_at_once_and_keeps_late_messages(
    harness: Harness, workspace: str
) -> None:
    h = harness
    stream, durable = await consumer_of(h)
    puller = Puller(h.client.nc, stream, durable)
    await puller.start()
    try:
        for e in timeline(f"run-{new_id()}", workspace, 3):
            await h.client.publish(e)
        started = time.perf_counter()
        first = await puller.fetch(10, timeout=5.0)
        assert len(first) == 3
        assert time.perf_counter() - started < 2.0  # not the 5 s a full batch could take

        with pytest.raises(TimeoutError):
            await puller.fetch(10, timeout=0.2)

        for e in timeline(f"run-{new_id()}", workspace, 300):
            await h.client.publish(e)
        got = []
        while len(got) < 300:
            batch = await puller.fetch(256, timeout=1.0)
            assert len(batch) <= 256
            got += batch
        assert len({m.data for m in got}) == 300
        for msg in [*first, *got]:
            await msg.ack()
    finally:
        await puller.stop()


async def _no_dead_letters(subject: str, msg: Msg, exc: Exception, n: int) -> None:
    raise AssertionError(f"nothing should be dead-lettered: {exc}")


def own_consumer(
    h: Harness, handler: Callable[[list[RunEvent]], Awaitable[None]]
) -> BatchConsumer[RunEvent]:
    """A run.event batch consumer of its own, where nothing may be dead-lettered."""
    return BatchConsumer(
        service="tracker-test",
        event_cls=RunEvent,
        subject=h.catalog.subject(RUN_EVENT),
        stream=h.catalog.stream_for(RUN_EVENT),
        durable=f"test-{new_id()[:8]}",
        handler=handler,
        dead_letter=_no_dead_letters,
        batch_size=64,
        fetch_timeout_s=0.2,
        max_deliver=3,
        ack_wait_s=30.0,
    )


async def test_a_failed_batch_is_redelivered_and_acknowledged_once_handled(
    harness: Harness, workspace: str
) -> None:
    h = harness
    events = timeline(f"run-{new_id()}", workspace, 5)
    calls: list[list[str]] = []

    async def handler(batch: list[RunEvent]) -> None:
        calls.append([e.event_id for e in batch])
        if len(calls) == 1:
            raise ConnectionError("the database went away")

    consumer = own_consumer(h, handler)
    for e in events:
        await h.client.publish(e)
    await consumer.start(h.client.nc)
    try:

        async def handled_twice() -> bool:
            return sum(map(len, calls)) >= 2 * len(events)

        await h.eventually(handled_twice, what="the failed batch to come back", timeout=15)
        await h.eventually(
            lambda: _acked(h, consumer), what="every message acknowledged", timeout=15
        )
    finally:
        await consumer.stop()
    ids = [e.event_id for e in events]
    assert sorted(calls[0]) == sorted(ids)
    assert sorted(i for batch in calls[1:] for i in batch) == sorted(ids)


async def test_a_batch_outlives_a_database_outage_longer_than_its_retries(
    harness: Harness, workspace: str
) -> None:
    """Postgres refusing connections for more deliveries than ``max_deliver``: no event of
    the batch is dead-lettered, and all are written once it is back."""
    h = harness
    events = timeline(f"run-{new_id()}", workspace, 5)
    calls: list[list[str]] = []
    letters: list[str] = []
    # Longer than the retries last (deliveries 1, 2, 3 after 0, 1 and 3 s, then a letter).
    back_at = time.monotonic() + 4.0

    async def handler(batch: list[RunEvent]) -> None:
        if time.monotonic() < back_at:
            starting = asyncpg.exceptions.CannotConnectNowError(
                "the database system is starting up"
            )
            raise DBAPIError("COPY run_events", {}, starting)
        calls.append([e.event_id for e in batch])

    async def dead_letter(subject: str, msg: Msg, exc: Exception, n: int) -> None:
        letters.append(repr(exc))

    consumer = own_consumer(h, handler)
    consumer.dead_letter = dead_letter
    consumer.unavailable_backoff_s = (0.1, 0.5)
    # On a loaded machine a redelivered message is now and then held until ack_wait.
    consumer.ack_wait_s = 5.0
    for e in events:
        await h.client.publish(e)
    await consumer.start(h.client.nc)
    try:
        await h.eventually(
            lambda: _acked(h, consumer), what="every message acknowledged", timeout=40
        )
    finally:
        await consumer.stop()
    assert letters == []
    # Every event reached the handler (at least once: a delivery held past ack_wait on a
    # loaded machine comes again, and the tracker's writes are idempotent).
    assert {i for batch in calls for i in batch} == {e.event_id for e in events}


async def _acked(h: Harness, consumer: BatchConsumer[Any]) -> bool:
    info = await h.client.js.consumer_info(consumer.stream, consumer.durable)
    return info.num_ack_pending == 0 and info.num_pending == 0


async def test_stop_waits_for_the_batch_being_written(harness: Harness, workspace: str) -> None:
    h = harness
    events = timeline(f"run-{new_id()}", workspace, 4)
    written: list[str] = []
    entered = asyncio.Event()

    async def slow_handler(batch: list[RunEvent]) -> None:
        entered.set()
        await asyncio.sleep(0.5)
        written.extend(e.event_id for e in batch)

    consumer = own_consumer(h, slow_handler)
    for e in events:
        await h.client.publish(e)
    await consumer.start(h.client.nc)
    await asyncio.wait_for(entered.wait(), 10)
    await consumer.stop()

    assert sorted(written) == sorted(e.event_id for e in events)
    await h.client.nc.flush()  # acks are buffered publishes
    await h.eventually(lambda: _acked(h, consumer), what="the batch acknowledged", timeout=5)


async def test_light_traffic_costs_no_pull_request_per_message(
    harness: Harness, workspace: str
) -> None:
    # Messages arriving one at a time reach an eager puller through the request it left
    # open; only its expiry (or a full batch) makes it ask again. Every request is a
    # round trip on the server and a status answer to read back.
    h = harness
    stream, durable = await consumer_of(h)
    requests: list[bytes] = []

    async def count(msg: Msg) -> None:
        requests.append(msg.data)

    spy = await h.client.nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}", cb=count)
    puller = Puller(h.client.nc, stream, durable, eager=True)
    await puller.start()
    got: list[Msg] = []
    try:
        for e in timeline(f"run-{new_id()}", workspace, 20):
            fetching = asyncio.create_task(puller.fetch(64, timeout=10.0))
            await h.client.publish(e)
            batch = await asyncio.wait_for(fetching, 5.0)
            assert len(batch) == 1  # each handed over as it arrives
            got += batch
        await h.client.nc.flush()
        assert len({m.data for m in got}) == 20
        assert len(requests) <= 4, f"{len(requests)} pull requests for 20 messages"
    finally:
        for msg in got:
            await msg.ack()
        await spy.unsubscribe()
        await puller.stop()
