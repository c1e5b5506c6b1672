"""The quota service on a Redis Cluster (three masters on loopback): a thousand concurrent
reservations never pass a hard limit, and every key of a subscription lives in one slot,
so each Lua script runs on one master."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from redis.asyncio.cluster import RedisCluster as ClusterClient

from tally.events import (
    ReleaseReply,
    ReleaseRequest,
    ReserveManyReply,
    ReserveManyRequest,
    ReserveRequest,
    UsageReply,
    UsageRequest,
    new_id,
)
from tally.redis import connect_redis
from tests.cluster.servers import RedisCluster, redis_cluster
from tests.integration.test_quota_concurrency import ledger_rows, reserve, write_subscription

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

#: Seconds the quota service may take to stop (its graceful timeout is 15 s).
STOP_S = 30.0


@asynccontextmanager
async def quota_on_a_cluster(
    h: Harness, tmp_path: Path, name: str, tokens: int
) -> AsyncIterator[RedisCluster]:
    """A Redis Cluster and the quota service on it, with a day limit of ``tokens`` for
    subscription ``name``.

    The service stops before its cluster does, within ``STOP_S``: a failing test may leave
    reservations in flight, and once the cluster is gone each of them would wait out the
    client's reconnect back-off before the service could stop: the teardown hung instead
    of the test failing.
    """
    with redis_cluster(tmp_path) as cluster:
        try:
            await h.start(
                "quota",
                redis_url=cluster.url,
                subscriptions_path=write_subscription(tmp_path, name, {"day": {"tokens": tokens}}),
            )
            yield cluster
        finally:
            await asyncio.wait_for(h.stop_all(), STOP_S)


async def test_concurrent_reservations_on_a_redis_cluster_never_pass_a_hard_limit(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    limit = 5_000
    name = f"cluster-{new_id()[:8]}"
    async with quota_on_a_cluster(h, tmp_path, name, limit) as cluster:
        rng = random.Random(11)
        sizes = [rng.randint(1, 50) for _ in range(1_000)]  # ~25k tokens asked
        prefix = f"cl-{new_id()[:8]}-"

        replies = await asyncio.gather(
            *(reserve(h, name, t, f"{prefix}{i}", timeout=60.0) for i, t in enumerate(sizes))
        )

        accepted = {r.reservation_id: t for r, t in zip(replies, sizes, strict=True) if r.ok}
        total = sum(accepted.values())
        assert total <= limit
        refused = [t for r, t in zip(replies, sizes, strict=True) if not r.ok]
        assert refused and all(total + t > limit for t in refused)
        rows = await ledger_rows(h, prefix)
        assert {r.reservation_id: r.tokens for r in rows if r.op == "reserve"} == accepted

        # Give one back: the release script runs on the cluster too.
        first = next(iter(accepted))
        released = await h.client.request(
            ReleaseRequest(reservation_id=first), ReleaseReply, step="quota"
        )
        assert released.status == "released"
        usage = await h.client.request(UsageRequest(), UsageReply, step="quota")
        day = next(s["day"] for s in usage.subscriptions if s["subscription"] == name)
        assert (day["reserved_tokens"], day["used_tokens"]) == (total - accepted[first], 0)

        # Every key of the subscription hashes to one slot, on one master.
        client = connect_redis(cluster.url)
        assert isinstance(client, ClusterClient)
        try:
            keys = [k async for k in client.scan_iter(match=f"*{name}*", count=1000)]
            assert len(keys) > len(accepted)  # windows, reservations, expiry index
            slots = {await client.cluster_keyslot(k) for k in keys}
            assert len(slots) == 1
            primaries = [n for n in client.get_nodes() if n.server_type == "primary"]
            assert len(primaries) == 3
            assert {client.get_node_from_key(k).port for k in keys} <= {n.port for n in primaries}
        finally:
            await client.aclose()


async def test_a_batch_of_reservations_is_the_first_thing_a_cluster_sees(
    harness: Harness, tmp_path: Path
) -> None:
    """``quota.reserve_many`` (the assigner's path) runs its scripts in a cluster pipeline;
    on a fresh cluster no master has loaded them yet."""
    h = harness
    name = f"cluster-{new_id()[:8]}"
    async with quota_on_a_cluster(h, tmp_path, name, 1_000):
        prefix = f"many-{new_id()[:8]}-"
        asks = [
            ReserveRequest(
                subscription=name, tokens=30, cost_usd=0.0, reservation_id=f"{prefix}{i}"
            )
            for i in range(40)  # 1,200 tokens asked of 1,000
        ]
        reply = await h.client.request(
            ReserveManyRequest(reservations=asks), ReserveManyReply, step="quota", timeout=60.0
        )
        accepted = {r.reservation_id for r in reply.replies if r.ok}
        assert len(accepted) == 33 and all(
            "limit" in r.reason for r in reply.replies if not r.ok
        ), [r.reason for r in reply.replies if not r.ok]
        rows = await ledger_rows(h, prefix)
        assert {r.reservation_id for r in rows if r.op == "reserve"} == accepted
