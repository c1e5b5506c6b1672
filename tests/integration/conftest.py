"""A harness for running one or two services in-process against the real servers.

Every test gets its own namespace (streams, durable consumers, Redis keys) inside the
session's database: a service started in one test never replays another test's messages,
and quota windows and alert marks start empty. Rows in Postgres are told apart by the
test's workspace and unique ids.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
from faststream.asgi import AsgiFastStream
from nats.aio.msg import Msg
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.client import TallyClient
from tally.db import create_engine
from tally.events import DeadLetter, Event, new_id
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tally.subjects import Catalog

T = TypeVar("T")

#: The reporter's bootstrap token in tests: an operator's admin token (workspace ``*``).
ADMIN_TOKEN = "tly_test-operator-admin-token"
#: Headers that send it.
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

#: Service name -> (module with ``create_app``, module with the settings class, class name).
SERVICES: dict[str, tuple[str, str, str]] = {
    name: (f"services.{name}.app", f"services.{name}.settings", f"{name.title()}Settings")
    for name in ("estimator", "assigner", "quota", "tracker", "learner", "reporter")
}


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 15.0, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy, for at most ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def next_item(queue: asyncio.Queue[T], *, timeout: float = 15.0, what: str = "event") -> T:
    """The next item of a watch queue, or a failure naming what never came."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError as exc:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from exc


class Harness:
    """One test's view of Tally: its settings, the services it started, a client, the DB."""

    def __init__(self, settings: TallySettings, client: TallyClient, engine: AsyncEngine) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.namespace)
        self.client = client
        self.engine = engine
        self.apps: list[AsgiFastStream] = []

    async def start(self, service: str, **overrides: Any) -> AsgiFastStream:
        """Start ``service`` in-process on this test's namespace; stopped after the test.

        ``overrides`` are settings fields of that service (e.g. ``history_check_interval_s=0``).
        """
        app_module, settings_module, settings_cls = SERVICES[service]
        if service == "reporter":
            overrides.setdefault("bootstrap_token", ADMIN_TOKEN)
            # Tests send bursts; the rate limit has its own test.
            overrides.setdefault("rate_limit_burst", 100_000)
        settings = getattr(importlib.import_module(settings_module), settings_cls)(
            **{
                "nats_url": self.settings.nats_url,
                "database_url": self.settings.database_url,
                "redis_url": self.settings.redis_url,
                "namespace": self.settings.namespace,
                **overrides,  # a test may point a service at a server of its own
            }
        )
        app: AsgiFastStream = importlib.import_module(app_module).create_app(settings)
        await app.start()
        self.apps.append(app)
        return app

    async def stop_all(self) -> None:
        while self.apps:
            await self.apps.pop().stop()

    async def answer_to(self, event: Event, cls: type[Any]) -> Any:
        """Publish ``event`` and wait for the ``cls`` event about the same task."""
        task_id = event.task_id  # type: ignore[attr-defined]
        async with self.client.watch(cls, lambda e: e.task_id == task_id) as q:
            await self.client.publish(event)
            return await next_item(q, what=f"{cls.subject} for {task_id}")

    async def publish_raw(self, base_subject: str, payload: bytes, msg_id: str) -> None:
        """Publish bytes as they are (e.g. an invalid event) with a given ``Nats-Msg-Id``.

        Also used to deliver a second copy of an event under another message id, which
        JetStream's duplicate window cannot catch: only the services' own idempotency can.
        """
        await self.client.js.publish(
            self.catalog.subject(base_subject), payload, headers={"Nats-Msg-Id": msg_id}
        )

    async def redeliver(self, event: Event) -> None:
        """Deliver ``event`` again, past JetStream's dedupe (same event id, new message id)."""
        await self.publish_raw(type(event).subject, event.to_json(), f"again-{new_id()}")

    @asynccontextmanager
    async def dead_letters(self, service: str) -> AsyncIterator[asyncio.Queue[DeadLetter]]:
        """Collect what ``service`` dead-letters from now on."""
        queue: asyncio.Queue[DeadLetter] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            queue.put_nowait(DeadLetter.model_validate_json(msg.data))

        sub = await self.client.nc.subscribe(self.catalog.dlq(service), cb=on_msg)
        try:
            yield queue
        finally:
            await sub.unsubscribe()

    async def drained(self, service: str, base_subject: str, *, timeout: float = 15.0) -> None:
        """Wait until ``service``'s consumer of ``base_subject`` has handled everything.

        Nothing pending and nothing awaiting an ack: every delivery so far was processed
        (and redeliveries of failed ones too), so a count in Postgres is final.
        """
        stream = self.catalog.stream_for(base_subject)
        durable = self.catalog.durable(service, base_subject)

        async def idle() -> bool:
            info = await self.client.js.consumer_info(stream, durable)
            return info.num_pending == 0 and info.num_ack_pending == 0

        await eventually(idle, timeout=timeout, what=f"{durable} to drain")

    #: Bounded polling and waiting, as methods so tests need only the harness.
    eventually = staticmethod(eventually)
    next_item = staticmethod(next_item)

    async def scalar(self, stmt: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def rows(self, stmt: Any) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(stmt)).all())

    async def execute(self, stmt: Any, params: Any = None) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(stmt, params)


@pytest.fixture
async def harness(stack: TallySettings) -> AsyncIterator[Harness]:
    """A fresh namespace with its streams, a client, the database; services stop after."""
    async with sandbox(stack, prefix=f"{stack.namespace}x", database=False) as settings:
        engine = create_engine(settings.database_url)
        try:
            async with TallyClient.connect(
                settings.nats_url, namespace=settings.namespace
            ) as client:
                h = Harness(settings, client, engine)
                try:
                    yield h
                finally:
                    await h.stop_all()
        finally:
            await engine.dispose()
