"""The Redis client every service that needs Redis uses: one server, or a Redis Cluster.

``redis://`` and ``rediss://`` URLs name one server. ``redis+cluster://`` and
``rediss+cluster://`` name any node of a Redis Cluster: the client discovers the others
and sends each command to the master of its key's slot (quota keys carry a hash tag per
subscription, so each Lua script touches one slot).

Example:
    >>> type(connect_redis("redis+cluster://:pw@redis-cluster:6379/0")).__name__
    'RedisCluster'
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

#: A client for one server or for a cluster; both run the same commands and scripts.
RedisClient: TypeAlias = Redis | RedisCluster

#: Cluster URL schemes and the plain scheme each stands for.
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
#: Connections a single-server client opens at most; a burst beyond waits for one.
MAX_CONNECTIONS = 100
#: Seconds a command waits for a free connection before failing (a transient error).
POOL_TIMEOUT_S = 10.0
#: Connections to each cluster node. redis-py's cluster client refuses a command
#: (``MaxConnectionsError``) rather than wait for one past this, so it must exceed what a
#: process runs at once (the quota service: its responders plus its consumers).
CLUSTER_MAX_CONNECTIONS = 512


def is_cluster_url(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://…``)."""
    return url.partition("://")[0] in CLUSTER_SCHEMES


def connect_redis(url: str) -> RedisClient:
    """A pooled asyncio client for ``url`` (connections open lazily).

    On one server, a burst of more concurrent commands than ``MAX_CONNECTIONS`` waits
    for a connection instead of failing with "Too many connections".

    Raises:
        ValueError: a cluster URL selects a database other than 0 (a cluster has one).
    """
    scheme, _, rest = url.partition("://")
    if scheme not in CLUSTER_SCHEMES:
        pool = BlockingConnectionPool.from_url(
            url,
            decode_responses=True,
            health_check_interval=30,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_S,
        )
        return Redis.from_pool(pool)
    path = rest.partition("?")[0].partition("/")[2]
    if path not in ("", "0"):
        raise ValueError(f"redis_url: a Redis Cluster has database 0 only, not {path!r}")
    plain = f"{CLUSTER_SCHEMES[scheme]}://{rest}"
    return RedisCluster.from_url(
        plain,
        decode_responses=True,
        health_check_interval=30,
        max_connections=CLUSTER_MAX_CONNECTIONS,
    )


async def prepare_redis(client: RedisClient) -> None:
    """Ready a client before its first commands: a cluster client learns the nodes and
    their slots here. Left to the first commands, concurrent ones race through redis-py's
    lazy discovery and some fail.

    Raises:
        redis.exceptions.RedisError: no node of the cluster answered.
    """
    if isinstance(client, RedisCluster):
        await client.initialize()
