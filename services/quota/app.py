"""The quota service: atomic reservations in Redis, an append-only ledger in Postgres."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import structlog
from faststream.asgi import AsgiFastStream

from services.quota import handlers
from services.quota.fallback import fallback_prices
from services.quota.ledger import QuotaLedger
from services.quota.reservations import QuotaStore, utc_now
from services.quota.settings import QuotaSettings
from services.quota.subscriptions import load_subscriptions
from services.quota.switches import FreezeSwitches
from tally import metrics
from tally.db import create_engine, ping
from tally.redis import connect_redis, prepare_redis
from tally.registry import load_models
from tally.service import ServiceKit

log = structlog.get_logger(__name__)


def create_app(
    settings: QuotaSettings | None = None, *, clock: Callable[[], datetime] = utc_now
) -> AsgiFastStream:
    """The quota service's app.

    Args:
        settings: defaults to the ``TALLY_QUOTA_*`` environment.
        clock: the time windows, expiries and ledger rows follow; tests move it.
    """
    settings = settings or QuotaSettings()
    kit = ServiceKit("quota", settings)
    engine = create_engine(settings.database_url)
    redis = connect_redis(settings.redis_url)
    kit.probe("postgres", ping(engine))
    kit.probe("redis", redis.ping)

    @kit.on_startup
    async def open_redis() -> None:
        await prepare_redis(redis)

    subscriptions = load_subscriptions(settings.subscriptions_path)
    store = QuotaStore(
        redis,
        subscriptions,
        namespace=settings.namespace or "tally",
        clock=clock,
        fallback=fallback_prices(subscriptions.subscriptions, load_models(settings.models_path)),
    )
    ledger = QuotaLedger(engine)
    handlers.register(
        kit.bus, store, ledger, subscriptions.names, concurrency=settings.responder_concurrency
    )
    handlers.register_admin(
        kit.bus,
        store,
        ledger,
        subscriptions.names,
        settings.rebuild_default_ttl_s,
        FreezeSwitches(engine, store.namespace),
    )

    async def sweep_forever() -> None:
        while True:
            try:
                await handlers.export_usage(store, subscriptions.names)
            except Exception:  # gauges failing must not stop the sweeps: logged and counted
                log.exception("usage_export_failed")
                metrics.CONSUMER_RESTARTS.labels("quota", "usage-export").inc()
            await asyncio.sleep(settings.sweep_interval_s)
            # A failing sweep (expired reservations not released) is a crash of the
            # sweeper: restarted with back-off, counted, and named in /healthz.
            released = await handlers.sweep_once(kit.bus, store, ledger)
            if released:
                log.info("reservations_expired", count=released)

    kit.supervise("sweeper", sweep_forever)

    @kit.on_shutdown
    async def close() -> None:
        # The broker has stopped: no handler appends any more; commit what is waiting.
        await ledger.flush()
        await redis.aclose()
        await engine.dispose()

    return kit.app()
