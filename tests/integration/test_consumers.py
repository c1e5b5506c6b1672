"""Event consumers against the real NATS server: retries, dead letters, no head-of-line wait.

Every service's ``Bus.on`` handlers run on :class:`~tally.consumers.EventConsumer`; these
tests drive one directly on a durable of their own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import redis

from tally.consumers import EventConsumer
from tally.errors import TransientError
from tally.events import TaskCreated, new_id
from tally.subjects import TASK_CREATED

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

Letters = list[tuple[str, Exception, int]]


def consumer(
    h: Harness,
    handler: Callable[[TaskCreated], Awaitable[None]],
    letters: Letters,
    *,
    max_deliver: int = 3,
) -> EventConsumer[TaskCreated]:
    async def dead_letter(subject: str, msg: Msg, exc: Exception, n: int) -> None:
        letters.append((msg.data.decode(), exc, n))

    return EventConsumer(
        event_cls=TaskCreated,
        handler=handler,
        concurrency=4,
        service="consumer-test",
        subject=h.catalog.subject(TASK_CREATED),
        stream=h.catalog.stream_for(TASK_CREATED),
        durable=f"test-{new_id()[:8]}",
        dead_letter=dead_letter,
        fetch_timeout_s=0.5,
        max_deliver=max_deliver,
        ack_wait_s=30.0,
    )


def task(workspace: str, title: str = "Add OAuth login") -> TaskCreated:
    return TaskCreated(task_id=f"task-{new_id()}", workspace=workspace, title=title)


@asynccontextmanager
async def running(h: Harness, c: EventConsumer[Any]) -> AsyncIterator[None]:
    """The consumer pulling for the block's duration."""
    await c.start(h.client.nc)
    try:
        yield
    finally:
        await c.stop()


async def settled(h: Harness, c: EventConsumer[Any]) -> bool:
    info = await h.client.js.consumer_info(c.stream, c.durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_transient_failure_is_retried_until_it_succeeds(
    harness: Harness, workspace: str
) -> None:
    h = harness
    tries: list[str] = []
    letters: Letters = []

    async def flaky(e: TaskCreated) -> None:
        tries.append(e.task_id)
        if len(tries) < 3:
            raise TransientError("the database is restarting", delay_s=0.1)

    c = consumer(h, flaky, letters, max_deliver=5)
    event = task(workspace)
    await h.client.publish(event)
    async with running(h, c):
        await h.eventually(lambda: settled(h, c), what="the message handled and acknowledged")
    assert tries == [event.task_id] * 3
    assert letters == []


@pytest.mark.parametrize(
    "outage",
    [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
    ],
    ids=["postgres", "redis"],
)
async def test_a_server_outage_longer_than_the_retries_dead_letters_nothing(
    harness: Harness, workspace: str, outage: Exception
) -> None:
    """Postgres or Redis down for more deliveries than ``max_deliver`` (seen in the drills:
    30 s down dead-lettered valid run events, and quota's settlements): the outage is not
    the message's fault, so it is redelivered until the server is back, then handled."""
    h = harness
    tries: list[str] = []
    letters: Letters = []

    async def handler(e: TaskCreated) -> None:
        tries.append(e.task_id)
        if len(tries) <= 5:
            raise outage

    c = consumer(h, handler, letters, max_deliver=3)
    c.unavailable_backoff_s = (0.1, 0.5)
    # On a loaded machine a redelivered message is now and then held until ack_wait.
    c.ack_wait_s = 5.0
    event = task(workspace)
    await h.client.publish(event)
    async with running(h, c):
        await h.eventually(
            lambda: settled(h, c), what="the message handled after the outage", timeout=40
        )
    assert tries == [event.task_id] * 6
    assert letters == []


async def test_a_message_out_of_deliveries_is_dead_lettered_with_its_reason(
    harness: Harness, workspace: str
) -> None:
    h = harness
    letters: Letters = []

    async def always_fails(e: TaskCreated) -> None:
        raise TransientError("upstream never answers", delay_s=0.1)

    c = consumer(h, always_fails, letters, max_deliver=3)
    event = task(workspace)
    await h.client.publish(event)
    async with running(h, c):
        await h.eventually(lambda: settled(h, c), what="the message dead-lettered")
    [(payload, exc, deliveries)] = letters
    assert event.task_id in payload
    assert "upstream never answers" in str(exc)
    assert deliveries == 3


async def test_an_invalid_payload_is_dead_lettered_at_once_and_the_next_is_handled(
    harness: Harness, workspace: str
) -> None:
    h = harness
    letters: Letters = []
    handled: list[str] = []

    async def handler(e: TaskCreated) -> None:
        handled.append(e.task_id)

    c = consumer(h, handler, letters)
    await h.publish_raw(TASK_CREATED, b'{"task_id": "t-1", "title": ""}', f"bad-{new_id()}")
    good = task(workspace)
    await h.client.publish(good)
    async with running(h, c):
        await h.eventually(lambda: settled(h, c), what="both messages settled")
    assert handled == [good.task_id]
    [(payload, exc, deliveries)] = letters
    assert '"t-1"' in payload and "title" in str(exc) and deliveries == 1


async def test_a_slow_handler_does_not_hold_back_the_others(
    harness: Harness, workspace: str
) -> None:
    h = harness
    release = asyncio.Event()
    handled: list[str] = []
    slow, *quick = [task(workspace, title=f"task {i}") for i in range(6)]

    async def handler(e: TaskCreated) -> None:
        if e.task_id == slow.task_id:
            await release.wait()
        handled.append(e.task_id)

    c = consumer(h, handler, [])
    await h.client.publish(slow)
    await c.start(h.client.nc)
    try:
        for e in quick:
            await h.client.publish(e)

        async def quick_ones_done() -> bool:
            return set(handled) == {e.task_id for e in quick}

        # More tasks than the consumer's concurrency (4) pass while the slow one still waits.
        await h.eventually(quick_ones_done, what="the quick tasks, past the slow one")
        release.set()
        await h.eventually(lambda: settled(h, c), what="every message acknowledged")
    finally:
        release.set()
        await c.stop()
    assert handled[-1] == slow.task_id


async def test_stop_lets_handlers_in_progress_finish_and_acknowledge(
    harness: Harness, workspace: str
) -> None:
    h = harness
    entered = asyncio.Event()
    handled: list[str] = []

    async def handler(e: TaskCreated) -> None:
        entered.set()
        await asyncio.sleep(0.3)
        handled.append(e.task_id)

    c = consumer(h, handler, [])
    event = task(workspace)
    await h.client.publish(event)
    await c.start(h.client.nc)
    await asyncio.wait_for(entered.wait(), 10)
    await c.stop()
    assert handled == [event.task_id]
    await h.client.nc.flush()
    await h.eventually(lambda: settled(h, c), what="the message acknowledged", timeout=5)


async def test_a_message_whose_dead_letter_fails_is_kept_until_it_can_be_sent(
    harness: Harness, workspace: str
) -> None:
    """Never dropped: out of deliveries or not, an unsent letter leaves the message un-acked."""
    h = harness
    letters: Letters = []
    refusals = 0

    async def always_fails(e: TaskCreated) -> None:
        raise TransientError("upstream never answers", delay_s=0.05)

    c = consumer(h, always_fails, letters, max_deliver=2)
    send = c.dead_letter

    async def flaky_letter(subject: str, msg: Msg, exc: Exception, n: int) -> None:
        nonlocal refusals
        if refusals < 2:
            refusals += 1
            raise OSError("the dead-letter stream is unreachable")
        await send(subject, msg, exc, n)

    c.dead_letter = flaky_letter
    await h.client.publish(task(workspace))
    async with running(h, c):
        await h.eventually(lambda: settled(h, c), timeout=30, what="the letter finally sent")
    assert refusals == 2
    [(_, exc, deliveries)] = letters
    assert "upstream never answers" in str(exc) and deliveries >= 4
