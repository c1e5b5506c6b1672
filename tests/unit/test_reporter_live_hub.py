"""The live hub's fan-out, drop-oldest and shutdown, and the SSE stream, without servers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from services.reporter.live import Deliver, LiveHub, event_stream, sse_event

#: Longest a test waits for one chunk of a stream before it fails.
WAIT_S = 5.0


class FakeFeed:
    """Stands in for the NATS subscription: counts opens and closes."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0

    async def __call__(self, deliver: Deliver) -> Callable[[], Awaitable[None]]:
        self.opened += 1

        async def close() -> None:
            self.closed += 1

        return close


def drain(queue: asyncio.Queue[tuple[str, bytes] | None]) -> list[tuple[str, bytes] | None]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


async def test_every_client_gets_every_message_over_one_feed() -> None:
    feed = FakeFeed()
    hub = LiveHub(feed)
    assert feed.opened == 0  # nothing is subscribed until someone watches
    async with hub.connect() as a, hub.connect() as b:
        assert (feed.opened, hub.clients) == (1, 2)
        hub.publish("runs", b'{"run_id": "r1"}')
        hub.publish("velocity", b"{}")
        assert drain(a) == drain(b) == [("runs", b'{"run_id": "r1"}'), ("velocity", b"{}")]
    assert hub.clients == 0
    hub.publish("runs", b"{}")  # nobody listening: nothing to do, nothing kept
    assert feed.opened == 1 and feed.closed == 0


async def test_a_slow_client_loses_its_oldest_messages_and_holds_up_nobody() -> None:
    hub = LiveHub(FakeFeed(), backlog=2)
    async with hub.connect() as slow, hub.connect() as fast:
        seen = []
        for n in range(5):
            hub.publish("runs", str(n).encode())
            seen += drain(fast)
        assert seen == [("runs", str(n).encode()) for n in range(5)]
        assert drain(slow) == [("runs", b"3"), ("runs", b"4")]
        assert hub.dropped == 3


async def test_closing_the_hub_ends_every_stream_and_the_feed() -> None:
    feed = FakeFeed()
    hub = LiveHub(feed, backlog=1)
    async with hub.connect() as queue:
        hub.publish("runs", b"{}")
        await hub.close()
        assert drain(queue) == [None]  # the end is never the message that gets dropped
    assert feed.closed == 1
    async with hub.connect() as late:
        assert drain(late) == [None]
    assert feed.opened == 1


async def next_chunk(stream: AsyncIterator[bytes]) -> bytes:
    return await asyncio.wait_for(anext(stream), WAIT_S)


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in stream]


async def test_the_stream_sends_events_then_stops_at_its_limit() -> None:
    hub = LiveHub(FakeFeed())
    stream = event_stream(hub, limit=2)
    assert await next_chunk(stream) == b": connected\n\n"
    hub.publish("runs", b'{"run_id": "r1"}')
    hub.publish("runs", b'{"a":\n1}')
    hub.publish("runs", b"{}")
    assert await next_chunk(stream) == b'event: runs\ndata: {"run_id": "r1"}\n\n'
    assert await next_chunk(stream) == b'event: runs\ndata: {"a":\ndata: 1}\n\n'
    assert await asyncio.wait_for(collect(stream), WAIT_S) == []
    assert hub.clients == 0


async def test_an_idle_stream_sends_heartbeats_until_the_hub_closes() -> None:
    hub = LiveHub(FakeFeed())
    stream = event_stream(hub, heartbeat_s=0.01)
    assert await next_chunk(stream) == b": connected\n\n"
    assert await next_chunk(stream) == b": heartbeat\n\n"
    await hub.close()
    assert await asyncio.wait_for(collect(stream), WAIT_S) == []
    assert hub.clients == 0


def test_an_event_with_no_data_still_has_a_data_field() -> None:
    assert sse_event("runs", b"") == b"event: runs\ndata: \n\n"
