"""Which Redis client a URL gives: one server, or a Redis Cluster (``redis+cluster://``)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from tally.redis import connect_redis, is_cluster_url


def test_a_plain_url_names_one_server() -> None:
    assert isinstance(connect_redis("redis://:pw@127.0.0.1:6379/2"), Redis)
    assert not is_cluster_url("rediss://:pw@redis:6379/0")


@pytest.mark.parametrize("url", ["redis+cluster://:pw@redis:6379/0", "rediss+cluster://redis:6379"])
def test_a_cluster_url_gives_a_cluster_client(url: str) -> None:
    assert is_cluster_url(url)
    assert isinstance(connect_redis(url), RedisCluster)


def test_a_cluster_url_with_another_database_is_refused() -> None:
    with pytest.raises(ValueError, match="redis_url: a Redis Cluster has database 0 only"):
        connect_redis("redis+cluster://redis:6379/3")
