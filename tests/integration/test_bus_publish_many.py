"""``Bus.publish_many``: a batch goes out without a task (an event-loop turn) per message.

A ``wait_stall`` on each ``publish_async`` made nats-py wrap every publish in
``asyncio.wait_for``, a task of its own: a batch of 256 assignments cost 256 event-loop
turns, which on a loaded machine took longer than the batch's round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import TYPE_CHECKING, Any

import pytest
from faststream.nats import NatsBroker

from tally.bus import Bus
from tally.events import TaskDeferred, utcnow

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def deferred(i: int) -> TaskDeferred:
    return TaskDeferred(
        event_id=f"deferred-T-{i}-a1",
        task_id=f"T-{i}",
        attempt=1,
        reason="test",
        retry_after=utcnow(),
    )


async def test_a_batch_is_published_without_a_task_per_message(harness: Harness) -> None:
    broker = NatsBroker(harness.settings.nats_url, logger=None)
    bus = Bus(broker, harness.catalog, "probe")
    await broker.start()
    loop = asyncio.get_running_loop()
    created = 0
    factory = loop.get_task_factory()

    def counting(
        loop: asyncio.AbstractEventLoop,
        coro: Generator[Any, None, Any] | Coroutine[Any, Any, Any],
        **kwargs: Any,
    ) -> asyncio.Future[Any]:
        nonlocal created
        created += 1
        if factory is not None:
            return factory(loop, coro, **kwargs)  # type: ignore[arg-type]
        return asyncio.Task(coro, loop=loop, **kwargs)

    try:
        await bus.publish_many([deferred(0)])  # the publish-ack inbox is set up once
        loop.set_task_factory(counting)  # type: ignore[arg-type]
        try:
            stored = await bus.publish_many([deferred(i) for i in range(1, 201)])
        finally:
            loop.set_task_factory(factory)
        assert stored == [True] * 200
        assert created < 10, f"{created} tasks for a batch of 200"
        again = await bus.publish_many([deferred(i) for i in range(1, 4)])
        assert again == [False] * 3  # duplicates by event id, acknowledged as such
    finally:
        await broker.stop()
