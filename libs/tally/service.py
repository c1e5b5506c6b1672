"""What every service's ``app.py`` needs: a broker, a bus, health and metrics over HTTP.

A service builds a :class:`ServiceKit`, registers its handlers on ``kit.bus``, adds
start-up and shut-down hooks for the resources it owns, and returns ``kit.app()``.

Example:
    >>> kit = ServiceKit("estimator", settings)          # doctest: +SKIP
    >>> handlers.register(kit.bus, Estimator(...))       # doctest: +SKIP
    >>> app = kit.app()                                  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import nats
import structlog
from faststream.asgi import AsgiFastStream
from faststream.asgi.types import ASGIApp
from faststream.nats import NatsBroker
from faststream.nats.prometheus import NatsPrometheusMiddleware
from faststream.security import BaseSecurity, SASLPlaintext
from nats.aio.client import Client as NATS

from tally import metrics
from tally.bus import Bus, provision_streams
from tally.health import Health, Supervised
from tally.lease import Lease
from tally.settings import ServiceSettings
from tally.subjects import Catalog

log = structlog.get_logger(__name__)

Hook = Callable[[], Awaitable[None]]

#: Seconds a stopping service gives its in-flight handlers to finish and acknowledge
#: (an orchestrator's grace period must be longer: deploy/k8s/).
GRACEFUL_TIMEOUT_S = 15.0

#: Allocations between two collections of the youngest generation, for a service that
#: turns over many objects (Python's default, 700, collects a batch still in use many times).
YOUNG_GC_THRESHOLD = 10_000


async def freeze_heap() -> None:
    """Take what start-up built out of the garbage collector's sight; collect less often.

    For a service whose events make many short-lived objects (the tracker validates
    thousands a second). Modules, schemas and pools live as long as the process, yet every
    full collection walks them again, and such turnover triggers one every few thousand
    events. Frozen (`gc.freeze`) they are never walked; objects made later are collected as
    usual, and the youngest generation is collected every `YOUNG_GC_THRESHOLD` allocations.
    A start-up hook (before the consumers start): the garbage is collected first, so
    none of it is kept.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, oldest)


class ServiceKit:
    """The parts every service is built from, wired the same way for all six."""

    def __init__(self, name: str, settings: ServiceSettings) -> None:
        self.name = name
        self.settings = settings
        self.catalog = Catalog(settings.namespace)
        #: This service's metrics alone, even when other services share the process.
        self.registry = metrics.registry_for(name)
        self.broker = NatsBroker(
            settings.nats_url,
            **_broker_credentials(settings),
            middlewares=[NatsPrometheusMiddleware(registry=self.registry, app_name=name)],
            graceful_timeout=GRACEFUL_TIMEOUT_S,
            logger=None,
            # Reconnect for as long as it takes: after nats-py's default budget (about two
            # minutes) a client stays closed and its service deaf until restarted.
            max_reconnect_attempts=-1,
            reconnect_time_wait=settings.nats_reconnect_wait_s,
        )
        self.bus = Bus(
            self.broker,
            self.catalog,
            name,
            max_deliver=settings.max_deliver,
            ack_wait_s=settings.ack_wait_s,
        )
        self._startup: list[Hook] = [self._provision]
        self._after_startup: list[Hook] = [self._start_consumers]
        self._before_shutdown: list[Hook] = [self._stop_consumers]
        self._shutdown: list[Hook] = []
        self._on_exit_signal: list[Hook] = []
        self._nc: NATS | None = None
        self._routes: list[tuple[str, ASGIApp]] = []
        self._lease: Lease | None = None
        #: tasks that run only on the lease holder (see :meth:`lead`)
        self._leader_tasks: list[Supervised] = []
        self.health = Health(stale_after_s=settings.health_stale_s)
        self.health.connections["broker"] = lambda: getattr(self.broker, "_connection", None)
        self.health.connections["consumers"] = lambda: self._nc

    async def _provision(self) -> None:
        nc = await nats.connect(self.settings.nats_url, **self.settings.nats_options())
        try:
            await provision_streams(nc, self.catalog, replicas=self.settings.stream_replicas)
        finally:
            await nc.close()

    async def _start_consumers(self) -> None:
        # A round trip to the server: once it answers, every subscription of this service
        # is registered there, so a request sent right after start-up finds a responder.
        await self.broker.connection.flush()
        if self._lease is not None:
            nc = self._nc = await self._connect(f"{self.name}-consumers")
            lease = self._lease
            # One attempt now: a replica alone leads (and has its consumers) once started.
            if await lease.try_acquire(await lease.bucket(nc)):
                await self._lead()
            self.supervise(
                f"lease:{lease.name}",
                lambda: lease.run(nc, on_acquired=self._lead, on_lost=self._follow),
            )
        elif self.bus.consumers:
            self._nc = await self._connect(f"{self.name}-consumers")
            await self._lead()
        else:
            del self.health.connections["consumers"]
        for task in self.health.tasks:
            task.start()
        self.health.started = True

    async def _lead(self) -> None:
        """Start the durable consumers (and leader-only tasks): this replica does the work."""
        assert self._nc is not None
        for consumer in self.bus.consumers:
            await consumer.start(self._nc)
            self.health.consumers.append(consumer)
        for task in self._leader_tasks:
            task.start()
            self.health.tasks.append(task)

    async def _follow(self) -> None:
        """Stop the durable consumers (in-flight handlers finish and ack) and leader-only
        tasks: another replica holds the lease."""
        for task in self._leader_tasks:
            await task.stop()
            if task in self.health.tasks:
                self.health.tasks.remove(task)
        for consumer in self.bus.consumers:
            await consumer.stop()
            if consumer in self.health.consumers:
                self.health.consumers.remove(consumer)

    def lead(self, lease: Lease) -> None:
        """Do this service's stream work on one replica at a time: the durable consumers,
        and tasks supervised with ``leader_only=True``, run only while this replica holds
        ``lease``; the others are hot standbys (they answer requests, follow broadcasts
        and take over within the lease's TTL). ``/healthz`` shows the lease task."""
        self._lease = lease

    async def _connect(self, name: str) -> NATS:
        async def disconnected() -> None:
            if self.health.started:  # not when the service is stopping
                log.warning("nats_disconnected", connection=name)

        async def reconnected() -> None:
            log.info("nats_reconnected", connection=name)

        return await nats.connect(
            self.settings.nats_url,
            name=name,
            max_reconnect_attempts=-1,
            reconnect_time_wait=self.settings.nats_reconnect_wait_s,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            **self.settings.nats_options(),
        )

    async def _stop_consumers(self) -> None:
        self.health.started = False
        await asyncio.gather(*(task.stop() for task in self.health.tasks))
        await asyncio.gather(*(consumer.stop() for consumer in self.bus.consumers))
        if self._nc:
            await self._nc.close()

    def probe(self, name: str, check: Callable[[], Awaitable[object]]) -> None:
        """Make ``/healthz`` ask a server the service needs (``check`` raises if it is
        down): while it does not answer, health is red and names it."""
        self.health.servers[name] = check

    def supervise(
        self, name: str, run: Callable[[], Awaitable[None]], *, leader_only: bool = False
    ) -> None:
        """Run ``run()`` in the background once consumers are running, started again with
        back-off if it crashes, and part of ``/healthz`` (sweepers, daily jobs). With
        ``leader_only`` it runs only while this replica holds the service's lease
        (:meth:`lead`), or always when the service has none."""
        task = Supervised(self.name, name, run)
        if leader_only and self._lease is not None:
            self._leader_tasks.append(task)
        else:
            self.health.tasks.append(task)

    async def _observe_consumers(self) -> None:
        # On a scrape: the lag as the server sees it now, on the consumers' connection.
        if self._nc is not None:
            await metrics.observe_consumers(self.name, self._nc.jetstream(), self.bus.consumers)

    def on_startup(self, hook: Hook) -> Hook:
        """Run ``hook`` before consumers start (open pools, load configuration)."""
        self._startup.append(hook)
        return hook

    def after_startup(self, hook: Hook) -> Hook:
        """Run ``hook`` once consumers are running (background loops that publish)."""
        self._after_startup.append(hook)
        return hook

    def on_shutdown(self, hook: Hook) -> Hook:
        """Run ``hook`` after consumers stop (close pools)."""
        self._shutdown.append(hook)
        return hook

    def on_exit_signal(self, hook: Hook) -> Hook:
        """Run ``hook`` as soon as the process is asked to stop, before the HTTP server
        waits for open connections to finish: for responses that would otherwise never
        end (the reporter's live stream). Only ``tally serve``/``tally up`` send it.
        """
        self._on_exit_signal.append(hook)
        return hook

    def route(self, path: str, handler: ASGIApp) -> None:
        """Serve an extra HTTP endpoint beside ``/healthz``, ``/readyz`` and ``/metrics``."""
        self._routes.append((path, handler))

    def app(
        self, extra_routes: Sequence[tuple[str, Any]] = (), *, api: ASGIApp | None = None
    ) -> AsgiFastStream:
        """The ASGI application: the bus consumers plus health, metrics and extra routes.

        Args:
            extra_routes: exact-path HTTP handlers.
            api: an ASGI app (e.g. Starlette) answering every other HTTP path, for
                services with a real HTTP API.
        """
        app = (_WithApi if api else AsgiFastStream)(
            self.broker,
            asgi_routes=[
                ("/healthz", self.health.liveness()),
                ("/readyz", self.health.readiness()),
                ("/metrics", metrics.asgi_app(self.registry, before=self._observe_consumers)),
                *self._routes,
                *extra_routes,
            ],
        )
        if api:
            app.api = api  # type: ignore[attr-defined]
        app.exit_hooks = tuple(self._on_exit_signal)  # type: ignore[attr-defined]
        for hook in self._startup:
            app.on_startup(hook)
        for hook in self._after_startup:
            app.after_startup(hook)
        for hook in self._before_shutdown:
            app.on_shutdown(hook)
        for hook in self._shutdown:
            app.after_shutdown(hook)
        return app


def _broker_credentials(settings: ServiceSettings) -> dict[str, Any]:
    """The service's NATS credentials and TLS in FastStream's terms."""
    options = settings.nats_options()
    tls = options.get("tls")
    security: BaseSecurity | None = None
    if "user" in options:
        security = SASLPlaintext(options["user"], options["password"], ssl_context=tls)
    elif tls is not None:
        security = BaseSecurity(ssl_context=tls)
    extra: dict[str, Any] = {"security": security}
    if "inbox_prefix" in options:
        extra["inbox_prefix"] = options["inbox_prefix"]
    return extra


class _WithApi(AsgiFastStream):
    """An AsgiFastStream that hands HTTP paths it does not serve to another ASGI app."""

    api: ASGIApp

    async def not_found(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await self.api(scope, receive, send)
            return
        await super().not_found(scope, receive, send)
