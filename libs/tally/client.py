"""A plain NATS client for Tally's own clients (the CLI and the agents' SDK).

Services use :class:`tally.bus.Bus` on a FastStream broker; clients only need to publish
events with dedupe ids, make requests and wait for answers, which nats-py does directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from pydantic import BaseModel

from tally.errors import PermanentError, StepTimeout, TransientError, reply_error
from tally.events import Event
from tally.logging import redact_url
from tally.subjects import Catalog

log = structlog.get_logger(__name__)

R = TypeVar("R", bound=BaseModel)
E = TypeVar("E", bound=Event)


class TallyClient:
    """Publishes events and waits for answers on one NATS connection."""

    def __init__(self, nc: NATS, catalog: Catalog, source: str = "client") -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.catalog = catalog
        self.source = source

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        namespace: str = "",
        source: str = "client",
        reconnect_attempts: int = 60,
        options: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[TallyClient]:
        """Connect to NATS at ``url``; the connection is drained on exit.

        ``options`` are further ``nats.connect`` arguments: credentials and TLS, as
        :meth:`tally.settings.TallySettings.nats_options` gives them.

        The first connection is tried twice, 0.2 s apart (a server that is down fails
        fast, in one line); a connection lost later is retried ``reconnect_attempts``
        times, 2 s apart (-1: for ever).

        Raises:
            TransientError: NATS does not answer at ``url``.
        """
        nc = NATS()
        failures: list[Exception] = []

        async def on_error(exc: Exception) -> None:
            # nats-py's default logs a traceback per error; one line is enough, and none
            # while connecting (the TransientError below says it).
            if nc.is_connected or nc.is_reconnecting:
                log.warning("nats_error", url=redact_url(url), error=str(exc) or type(exc).__name__)
            else:
                failures.append(exc)

        try:
            # Two quick attempts, so a server that is down is told at once (the defaults
            # retried for seconds with a traceback each time); once connected, the usual
            # reconnection policy applies (nats-py reads these options when it is lost).
            await nc.connect(
                url,
                connect_timeout=3,
                max_reconnect_attempts=1,
                reconnect_time_wait=0.2,  # type: ignore[arg-type]
                error_cb=on_error,
                **(options or {}),
            )
        except (OSError, nats.errors.Error, TimeoutError) as exc:
            # A refused login says so, not the reset of the connection it closed.
            refused = [f for f in failures if "authorization" in str(f).lower()]
            cause = (refused or failures or [exc])[-1]
            reason = str(cause) or type(cause).__name__
            raise TransientError(f"cannot reach NATS at {redact_url(url)}: {reason}") from exc
        nc.options["max_reconnect_attempts"] = reconnect_attempts
        nc.options["reconnect_time_wait"] = 2
        try:
            yield cls(nc, Catalog(namespace), source)
        finally:
            await nc.drain()

    async def publish(self, event: Event) -> bool:
        """Publish to the event's stream with ``Nats-Msg-Id``. False if it was a duplicate."""
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        ack = await self.js.publish(
            self.catalog.subject(type(event).subject),
            event.to_json(),
            headers={"Nats-Msg-Id": event.event_id, "content-type": "application/json"},
            timeout=5.0,
        )
        return not ack.duplicate

    async def request(self, event: Event, reply: type[R], *, step: str, timeout: float = 5.0) -> R:
        """Send a request and validate the answer.

        Raises:
            StepTimeout: ``step`` did not answer within ``timeout``.
            PermanentError: it answered with an error.
        """
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.source})
        try:
            msg = await self.nc.request(
                self.catalog.subject(type(event).subject), event.to_json(), timeout=timeout
            )
        except (TimeoutError, nats.errors.NoRespondersError) as exc:
            raise StepTimeout(step, timeout) from exc
        return parse_reply(msg.data, reply, step)

    @asynccontextmanager
    async def watch(
        self, event_cls: type[E], match: Callable[[E], bool]
    ) -> AsyncIterator[asyncio.Queue[E]]:
        """Collect events of one type that ``match``, from now on, into a queue.

        Subscribe before publishing the event that causes them, so none is missed.
        """
        queue: asyncio.Queue[E] = asyncio.Queue()

        async def on_msg(msg: Msg) -> None:
            try:
                event = event_cls.parse(msg.data)
            except PermanentError:
                return
            if match(event):
                queue.put_nowait(event)

        sub = await self.nc.subscribe(self.catalog.subject(event_cls.subject), cb=on_msg)
        try:
            yield queue
        finally:
            await sub.unsubscribe()


def parse_reply(data: bytes, reply: type[R], step: str) -> R:
    """Validate a reply; an error answer raises it (:func:`tally.errors.reply_error`)."""
    import json

    body: Any = json.loads(data)
    error = reply_error(body, step)
    if error is not None:
        raise error
    return reply.model_validate(body, extra="ignore")


async def next_event(queue: asyncio.Queue[E], *, step: str, timeout: float) -> E:
    """The next event from a :meth:`TallyClient.watch` queue, or :class:`StepTimeout`."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError as exc:
        raise StepTimeout(step, timeout) from exc
