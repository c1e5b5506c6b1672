"""A three-node NATS JetStream cluster (the shipped ``deploy/nats/cluster/`` configuration):
streams provisioned R3 lose nothing and store nothing twice while a node is killed -9 in
the middle of an ingest."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.errors import Error as NatsError
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import Error as JetStreamError

from tally import subjects
from tally.bus import provision_streams
from tally.events import RunEvent, new_id, utcnow
from tally.settings import nats_options
from tally.subjects import Catalog
from tests.cluster.servers import NatsCluster, nats_cluster

pytestmark = pytest.mark.cluster

T = TypeVar("T")

EVENTS = 20_000
#: Publishes awaiting their acknowledgement at once.
WINDOW = 200
#: The longest one event may take to be stored (a new leader is elected within seconds).
PUBLISH_DEADLINE_S = 120.0


async def _connect(cluster: NatsCluster) -> NATS:
    return await nats.connect(
        servers=cluster.urls,
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.2,
        **nats_options("operator", cluster.passwords["operator"]),
    )


async def _provision(nc: NATS, catalog: Catalog) -> None:
    """Provision R3 streams once the cluster has elected its JetStream meta leader."""
    await _retried(lambda: provision_streams(nc, catalog, replicas=3), within_s=60)


async def _publish(nc: NATS, subject: str, event: RunEvent, stream: str) -> None:
    """Store one event, trying again (same ``Nats-Msg-Id``) until the cluster acknowledges.

    A try whose acknowledgement was lost in the failover was stored; its retry is then
    acknowledged as a duplicate and not stored again.
    """
    js = nc.jetstream(timeout=2.0)
    body = event.to_json()
    deadline = time.monotonic() + PUBLISH_DEADLINE_S
    while True:
        try:
            await js.publish(subject, body, stream=stream, headers={"Nats-Msg-Id": event.event_id})
            return
        except (NatsError, JetStreamError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _retried(call: Callable[[], Awaitable[T]], within_s: float = PUBLISH_DEADLINE_S) -> T:
    """``call()``, asked again while the cluster is still settling (electing its leaders
    at start, or a new stream leader after the kill while the client reconnects away from
    the dead node): an API request in flight then times out without saying anything of
    what is stored."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return await call()
        except (NatsError, JetStreamError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


async def _stored_ids(nc: NATS, stream: str, subject: str) -> list[str]:
    """Every stored message's ``Nats-Msg-Id``, read back through a fresh consumer."""
    js = nc.jetstream(timeout=10.0)
    sub = await _retried(
        lambda: js.pull_subscribe(
            subject,
            stream=stream,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, max_ack_pending=-1),
        )
    )
    ids: list[str] = []
    total = (await _retried(lambda: js.stream_info(stream))).state.messages
    while len(ids) < total:
        for msg in await _retried(lambda: sub.fetch(1000, timeout=10.0)):
            ids.append((msg.headers or {})["Nats-Msg-Id"])
            await msg.ack()
    await sub.unsubscribe()
    return ids


async def test_r3_streams_store_every_event_once_while_a_node_is_killed(tmp_path: Path) -> None:
    # No namespace: the cluster is this test's own, and the shipped users name bare subjects.
    catalog = Catalog("")
    stream = catalog.stream_for(subjects.RUN_EVENT)
    subject = catalog.subject(subjects.RUN_EVENT)
    with nats_cluster(tmp_path) as cluster:
        nc = await _connect(cluster)
        try:
            await _provision(nc, catalog)
            info = await nc.jetstream().stream_info(stream)
            assert info.config.num_replicas == 3
            assert info.cluster is not None and len(info.cluster.replicas or []) == 2

            run_id = f"run-{new_id()}"
            events = [
                RunEvent(
                    workspace="acme",
                    run_id=run_id,
                    at=utcnow(),
                    detail={"kind": "note", "text": f"event {i}"},  # type: ignore[arg-type]
                )
                for i in range(EVENTS)
            ]
            # Kill the node leading the stream: the worst node to lose.
            leader = info.cluster.leader
            victim = next(node for node in cluster.nodes if node.name == leader)
            killed_at = EVENTS // 2
            for start in range(0, EVENTS, WINDOW):
                if start == killed_at:
                    victim.kill()
                batch = events[start : start + WINDOW]
                await asyncio.gather(*(_publish(nc, subject, e, stream) for e in batch))
            assert victim.process.returncode is not None  # it really died mid-way

            js = nc.jetstream(timeout=10.0)
            new_info = await _retried(lambda: js.stream_info(stream))
            assert new_info.cluster is not None and new_info.cluster.leader != leader
            assert new_info.state.messages == EVENTS
            ids = await _stored_ids(nc, stream, subject)
            assert len(ids) == EVENTS
            assert set(ids) == {e.event_id for e in events}
        finally:
            await nc.close()
