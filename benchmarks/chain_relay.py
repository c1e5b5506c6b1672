"""One hop of the raw JetStream relay ``benchmarks/chain.py`` measures Tally against.

Pulls batches from a durable consumer on one subject, republishes each message's body to
the next subject (``Nats-Msg-Id`` kept, publish acks collected per batch, not awaited one
by one), then acknowledges the batch: the least any consuming service must do per hop.

Run by ``benchmarks/chain.py`` as its own process:
``python benchmarks/chain_relay.py URL STREAM DURABLE FROM_SUBJECT TO_SUBJECT``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import nats
from nats.js.api import AckPolicy, ConsumerConfig


async def relay(url: str, stream: str, durable: str, source: str, target: str) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream(publish_async_max_pending=8_000)
    sub = await js.pull_subscribe(
        source,
        durable=durable,
        stream=stream,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    while not stop.is_set():
        try:
            msgs = await sub.fetch(256, timeout=0.05)
        except TimeoutError:
            continue
        for m in msgs:
            msg_id = (m.headers or {}).get("Nats-Msg-Id", "")
            await js.publish_async(target, m.data, headers={"Nats-Msg-Id": msg_id})
        await js.publish_async_completed()
        for m in msgs:
            await m.ack()
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(relay(*sys.argv[1:6]))
