"""The Redis client every service that needs Redis uses."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

#: Connections a client opens at most; a burst beyond waits for one to be free.
MAX_CONNECTIONS = 100
#: Seconds a command waits for a free connection before failing (a transient error).
POOL_TIMEOUT_S = 10.0


def connect_redis(url: str) -> Redis:
    """A pooled asyncio Redis client for ``url`` (connections open lazily).

    A burst of more concurrent commands than ``MAX_CONNECTIONS`` waits for a connection
    instead of failing with "Too many connections".
    """
    pool = BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        max_connections=MAX_CONNECTIONS,
        timeout=POOL_TIMEOUT_S,
    )
    return Redis.from_pool(pool)
