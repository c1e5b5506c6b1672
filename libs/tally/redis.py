"""The Redis client every service that needs Redis uses."""

from __future__ import annotations

from redis.asyncio import Redis


def connect_redis(url: str) -> Redis:
    """A pooled asyncio Redis client for ``url`` (connections open lazily)."""
    return Redis.from_url(url, decode_responses=True, health_check_interval=30)
