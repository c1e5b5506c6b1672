"""A throwaway Tally on real servers: its own namespace and database, removed on exit.

Tests and benchmarks run beside each other (and beside a real installation) on one
NATS, Postgres and Redis; a sandbox keeps their subjects, streams, Redis keys and rows
apart.

Example:
    >>> async with sandbox(TallySettings(), prefix="bq") as s:      # doctest: +SKIP
    ...     app = create_app(QuotaSettings(**s.urls()))
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import nats
from sqlalchemy.engine import make_url

from tally.bus import delete_streams, provision_streams
from tally.db.migrate import drop_database, migrate
from tally.events import new_id
from tally.redis import connect_redis
from tally.settings import TallySettings
from tally.subjects import Catalog


class Sandbox(TallySettings):
    """Settings of a sandbox: the servers' URLs with its own namespace and database."""

    def urls(self) -> dict[str, Any]:
        """The keyword arguments that point a service's settings at this sandbox."""
        return {
            "nats_url": self.nats_url,
            "database_url": self.database_url,
            "redis_url": self.redis_url,
            "namespace": self.namespace,
        }


async def delete_keys(redis_url: str, namespace: str) -> int:
    """Delete every Redis key of a namespace. Returns how many there were."""
    redis = connect_redis(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"*{namespace}*", count=1000)]
        if keys:
            await redis.delete(*keys)
        return len(keys)
    finally:
        await redis.aclose()


@contextlib.asynccontextmanager
async def sandbox(
    base: TallySettings, *, prefix: str = "sb", database: bool = True
) -> AsyncIterator[Sandbox]:
    """A fresh namespace with its streams and, if ``database``, a fresh migrated database.

    On exit the streams, the namespace's Redis keys and the database are removed.
    """
    namespace = f"{prefix}{new_id()[:8]}"
    url = base.database_url
    if database:
        url = make_url(url).set(database=f"tally_{namespace}").render_as_string(hide_password=False)
        await migrate(url)
    settings = Sandbox(**{**base.model_dump(), "namespace": namespace, "database_url": url})
    nc = await nats.connect(base.nats_url)
    try:
        await provision_streams(nc, Catalog(namespace))
        yield settings
    finally:
        await delete_streams(nc, Catalog(namespace))
        await nc.close()
        await delete_keys(base.redis_url, namespace)
        if database:
            await drop_database(url)
