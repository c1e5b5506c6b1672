"""Talking to NATS: stream provisioning, deduplicated publishing, typed consumers, dead letters.

A :class:`Bus` is one process's view of the bus for one service: it knows the broker, the
namespace (through a :class:`~tally.subjects.Catalog`) and the service's name. Handlers
registered through it receive validated events; a payload that fails validation, or a
handler that raises :class:`~tally.errors.PermanentError`, sends the original message to
``dlq.<service>`` with the reason and acknowledges it, so the consumer keeps going and
nothing is lost. A :class:`~tally.errors.TransientError` is redelivered with back-off until
``max_deliver`` is reached, and then dead-lettered too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import structlog
from faststream._internal.endpoint.subscriber.utils import MultiLock
from faststream.nats import JStream, NatsBroker
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy, ObjectStoreConfig, RetentionPolicy, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError
from pydantic import BaseModel

from tally import metrics
from tally.consumers import BatchConsumer, EventConsumer
from tally.errors import (
    PermanentError,
    StepTimeout,
    TransientError,
    ValidationFailed,
    is_unavailable,
    reply_error,
)
from tally.events import DeadLetter, Event, utcnow
from tally.lease import bucket_name
from tally.subjects import STREAMS, Catalog

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)
R = TypeVar("R", bound=BaseModel)

#: How long JetStream remembers a ``Nats-Msg-Id`` to drop a republished duplicate.
DUPLICATE_WINDOW_S = 2 * 3600
#: Headers of a responder's reply (FastStream's requesters decode by content type).
_JSON_HEADERS = {"content-type": "application/json"}
#: Requests a responder answers at once unless told otherwise.
DEFAULT_RESPONDER_CONCURRENCY = 16
#: Bytes of an original body a dead letter carries inline; a longer body is cut there and
#: kept whole in the dead-letter object store. Even fully JSON-escaped (6 bytes a byte) a
#: letter stays far below NATS's 1 MiB max payload.
DEAD_LETTER_BODY_BYTES = 64 * 1024
#: Characters of an error message a dead letter keeps.
DEAD_LETTER_ERROR_CHARS = 4096
#: The object-store bucket (base name) holding bodies too large for a dead letter.
DLQ_BODIES = "DLQ_BODIES"


async def provision_streams(nc: NATS, catalog: Catalog, *, replicas: int = 1) -> list[str]:
    """Create or update every Tally stream; safe to call any number of times.

    Args:
        replicas: copies of each stream in a NATS cluster (``TALLY_STREAM_REPLICAS``; a
            stream made with fewer is raised to it).

    Returns:
        The names of the streams, as provisioned.
    """
    js = nc.jetstream()
    names = []
    for spec in STREAMS:
        config = StreamConfig(
            name=catalog.stream(spec.name),
            subjects=[catalog.subject(s) for s in spec.subjects],
            duplicate_window=DUPLICATE_WINDOW_S,
            max_age=spec.max_age_s,
            retention=RetentionPolicy(spec.retention),
            num_replicas=replicas,
        )
        try:
            await js.stream_info(config.name or "")
            await js.update_stream(config)
        except NotFoundError:
            await js.add_stream(config)
        names.append(config.name or "")
    bucket = catalog.stream(DLQ_BODIES)
    try:
        await js.object_store(bucket)
    except BucketNotFoundError:
        await js.create_object_store(
            bucket, ObjectStoreConfig(max_bytes=1 << 30, replicas=replicas)
        )
    return names


async def delete_streams(nc: NATS, catalog: Catalog) -> None:
    """Delete the namespace's streams, dead-letter bodies and leases (used to clean up
    after tests)."""
    js = nc.jetstream()
    for spec in STREAMS:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(catalog.stream(spec.name))
    with contextlib.suppress(NotFoundError):
        await js.delete_object_store(catalog.stream(DLQ_BODIES))
    with contextlib.suppress(NotFoundError):
        await js.delete_key_value(bucket_name(catalog))


def _headers(raw: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in (getattr(raw, "headers", None) or {}).items()}


class Bus:
    """One service's connection to the bus.

    Args:
        broker: the FastStream NATS broker (connected by the app's lifespan).
        catalog: subject and stream names for the namespace.
        service: this service's name: durable consumers and the dead-letter subject use it.
        max_deliver: deliveries of a transiently failing message before it is dead-lettered.
        ack_wait_s: how long the server waits for an ack before redelivering.
    """

    def __init__(
        self,
        broker: NatsBroker,
        catalog: Catalog,
        service: str,
        *,
        max_deliver: int = 5,
        ack_wait_s: float = 30.0,
    ) -> None:
        self.broker = broker
        self.catalog = catalog
        self.service = service
        self.max_deliver = max_deliver
        self.ack_wait_s = ack_wait_s
        #: Pull consumers registered with :meth:`on` and :meth:`on_batch`; the service
        #: starts them once the broker is up.
        self.consumers: list[EventConsumer[Any] | BatchConsumer[Any]] = []
        self._jetstream: JetStreamContext | None = None

    # -- publishing -------------------------------------------------------------------
    async def publish(self, event: Event) -> bool:
        """Publish an event to its stream with ``Nats-Msg-Id`` = ``event_id``.

        Returns:
            True if the server stored it, False if it was a duplicate it already had.
        """
        if event.source == "unknown":
            event = event.model_copy(update={"source": self.service})
        base = type(event).subject
        ack = await self.broker.publish(
            event.to_json(),
            self.catalog.subject(base),
            headers={"Nats-Msg-Id": event.event_id, "content-type": "application/json"},
            stream=self.catalog.stream_for(base),
            timeout=5.0,
        )
        metrics.EVENTS_PUBLISHED.labels(self.service, base).inc()
        return not bool(ack and ack.duplicate)

    async def publish_many(self, events: Sequence[Event], *, timeout: float = 5.0) -> list[bool]:
        """Publish events like :meth:`publish`, without waiting for each one's ack.

        Every message goes out at once (one socket write for a batch); the server's acks
        are collected afterwards, so a batch costs one round trip, not one per event.

        Returns:
            For each event, True if the server stored it, False for a duplicate.

        Raises:
            Exception: any event was not acknowledged within ``timeout`` or was refused
                (the caller must not acknowledge what caused them: publish them again).
        """
        if not events:
            return []
        js = self._js()
        acks: list[asyncio.Future[Any]] = []
        try:
            # One deadline for the batch: a ``wait_stall`` per message would wrap each
            # publish in a task of its own (``asyncio.wait_for``), an event-loop turn per
            # message, which under load cost more than the batch's round trip.
            async with asyncio.timeout(timeout):
                for event in events:
                    if event.source == "unknown":
                        event = event.model_copy(update={"source": self.service})
                    acks.append(
                        await js.publish_async(
                            self.catalog.subject(type(event).subject),
                            event.to_json(),
                            headers={
                                "Nats-Msg-Id": event.event_id,
                                "content-type": "application/json",
                            },
                        )
                    )
                done = await asyncio.gather(*acks)
        except BaseException:
            for ack in acks:
                ack.cancel()
            raise
        for event in events:
            metrics.EVENTS_PUBLISHED.labels(self.service, type(event).subject).inc()
        return [not bool(ack.duplicate) for ack in done]

    def _js(self) -> JetStreamContext:
        """A JetStream context on the broker's connection, for publishing without waits."""
        if self._jetstream is None or self._jetstream._nc is not self.broker.connection:
            self._jetstream = self.broker.connection.jetstream(publish_async_max_pending=10_000)
        return self._jetstream

    async def publish_live(self, name: str, payload: BaseModel | dict[str, Any]) -> None:
        """Publish a live, unpersisted message on ``metrics.<name>``."""
        body = payload.model_dump_json() if isinstance(payload, BaseModel) else payload
        await self.broker.publish(body, self.catalog.metrics(name))

    async def request(self, event: Event, reply: type[R], *, step: str, timeout: float = 5.0) -> R:
        """Send a request/reply message and validate the answer.

        Raises:
            StepTimeout: nobody answered within ``timeout`` (``step`` names who should have).
            TransientError: the responder could not reach a server it needs; ask again.
            PermanentError: the responder answered with an error.
        """
        try:
            msg = await self.broker.request(
                event.to_json(), self.catalog.subject(type(event).subject), timeout=timeout
            )
        except TimeoutError as exc:
            raise StepTimeout(step, timeout) from exc
        body = await msg.decode()
        error = reply_error(body, step)
        if error is not None:
            raise error
        return reply.model_validate(body)

    async def dead_letter(
        self,
        *,
        subject: str,
        payload: bytes,
        headers: dict[str, str],
        error: Exception,
        deliveries: int = 1,
    ) -> None:
        """Publish a message that cannot be processed to ``dlq.<service>``, with the reason.

        The letter always fits in one NATS message: a body over ``DEAD_LETTER_BODY_BYTES``
        is stored whole in the dead-letter object store first and the letter carries its
        beginning, size and sha256. The letter's ``Nats-Msg-Id`` derives from the
        original's id (or, without one, from the body's sha256), so a message dead-lettered
        again by a redelivery or by another replica is stored once.

        Raises:
            Exception: the letter could not be stored; the caller must keep the message.
        """
        digest = hashlib.sha256(payload).hexdigest()
        ref = None
        body = payload
        if len(payload) > DEAD_LETTER_BODY_BYTES:
            ref = await self._store_body(digest, payload)
            body = payload[:DEAD_LETTER_BODY_BYTES]
        reason = str(error)
        if len(reason) > DEAD_LETTER_ERROR_CHARS:
            reason = reason[:DEAD_LETTER_ERROR_CHARS] + f"… ({len(reason)} characters)"
        letter = DeadLetter(
            service=self.service,
            subject=subject,
            error=reason,
            error_type=type(error).__name__,
            failed_at=utcnow(),
            payload=body.decode("utf-8", errors="backslashreplace"),
            headers=headers,
            deliveries=deliveries,
            payload_size=len(payload),
            payload_sha256=digest,
            payload_ref=ref,
        )
        msg_id = headers.get("Nats-Msg-Id") or digest
        await self.broker.publish(
            letter.model_dump_json(),
            self.catalog.dlq(self.service),
            headers={"Nats-Msg-Id": f"dlq:{self.service}:{msg_id}"},
            stream=self.catalog.stream("DLQ"),
            timeout=5.0,
        )
        metrics.DEAD_LETTERS.labels(self.service, subject).inc()
        log.warning(
            "dead_lettered",
            subject=subject,
            error=reason[:500],
            service=self.service,
            size=len(payload),
            ref=ref,
        )

    async def _store_body(self, digest: str, payload: bytes) -> str:
        """Keep a body too large for a dead letter in the object store; returns its key."""
        js = self.broker.connection.jetstream()
        bucket = self.catalog.stream(DLQ_BODIES)
        try:
            store = await js.object_store(bucket)
        except BucketNotFoundError:
            store = await js.create_object_store(bucket, ObjectStoreConfig(max_bytes=1 << 30))
        await store.put(digest, payload)
        return f"{bucket}/{digest}"

    async def dead_letter_body(self, letter: DeadLetter) -> bytes:
        """The whole original body of a dead letter (fetched from the object store if cut)."""
        if not letter.payload_ref:
            return letter.payload.encode()
        bucket, _, key = letter.payload_ref.partition("/")
        store = await self.broker.connection.jetstream().object_store(bucket)
        result = await store.get(key)
        return bytes(result.data or b"")

    # -- consuming --------------------------------------------------------------------
    def _pull_kwargs(self, base: str, fetch_timeout_s: float) -> dict[str, Any]:
        return {
            "service": self.service,
            "subject": self.catalog.subject(base),
            "stream": self.catalog.stream_for(base),
            "durable": self.catalog.durable(self.service, base),
            "dead_letter": self._dead_letter_msg,
            "fetch_timeout_s": fetch_timeout_s,
            "max_deliver": self.max_deliver,
            "ack_wait_s": self.ack_wait_s,
        }

    def on(
        self, event_cls: type[E], *, concurrency: int = 16
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        """Register a handler for one event type on a durable pull consumer.

        Up to ``concurrency`` messages are handled at once; replicas share the consumer.
        A transient failure is redelivered with a growing delay and dead-lettered on its
        last delivery; a permanent one (an invalid payload) is dead-lettered at once.
        The consumers start with the service (see :mod:`tally.consumers`).
        """

        def register(fn: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            self.consumers.append(
                EventConsumer(
                    event_cls=event_cls,
                    handler=fn,
                    concurrency=concurrency,
                    **self._pull_kwargs(event_cls.subject, fetch_timeout_s=1.0),
                )
            )
            return fn

        return register

    def on_broadcast(
        self, event_cls: type[E]
    ) -> Callable[[Callable[[E], Awaitable[None]]], Callable[[E], Awaitable[None]]]:
        """Register a handler that every replica runs for every event (state updates).

        An ephemeral consumer starting from the stream's latest message of the subject, so
        a replica that starts late still sees the current state. Invalid messages are
        dead-lettered by the durable consumers; here they are only logged.
        """
        base = event_cls.subject

        def register(fn: Callable[[E], Awaitable[None]]) -> Callable[[E], Awaitable[None]]:
            @self.broker.subscriber(
                self.catalog.subject(base),
                stream=JStream(self.catalog.stream_for(base), declare=False),
                deliver_policy=DeliverPolicy.LAST,
            )
            async def consume(body: Any) -> None:
                raw = self.broker.context.get_local("message").raw_message
                try:
                    await fn(event_cls.parse(raw.data))
                except ValidationFailed as exc:
                    log.warning("broadcast_invalid", subject=base, error=str(exc))

            return fn

        return register

    def on_batch(
        self,
        event_cls: type[E],
        *,
        batch_size: int = 256,
        fetch_timeout_s: float = 1.0,
        concurrency: int = 1,
    ) -> Callable[[Callable[[list[E]], Awaitable[None]]], Callable[[list[E]], Awaitable[None]]]:
        """Register a handler that receives up to ``batch_size`` events at once.

        Invalid messages of a batch are dead-lettered one by one; the valid rest reach the
        handler, and are acknowledged after it returns. If it raises, the batch is
        redelivered with a delay, and a message out of deliveries is dead-lettered.
        A batch is whatever is waiting (up to ``batch_size``) when the handler is free;
        ``concurrency`` batches are handled at once (1: one at a time, in order).
        The consumers start with the service (see :mod:`tally.consumers`).

        Args:
            fetch_timeout_s: how long an idle pull request waits. A pull returns with the
                first message to arrive, so this costs no latency; shorter only wakes an
                idle service more often (at 0.2 s the chain's idle pulls cost each service
                25-50 ms of CPU a second).
        """

        def register(
            fn: Callable[[list[E]], Awaitable[None]],
        ) -> Callable[[list[E]], Awaitable[None]]:
            self.consumers.append(
                BatchConsumer(
                    event_cls=event_cls,
                    handler=fn,
                    batch_size=batch_size,
                    concurrency=concurrency,
                    **self._pull_kwargs(event_cls.subject, fetch_timeout_s=fetch_timeout_s),
                )
            )
            return fn

        return register

    async def _dead_letter_msg(self, subject: str, msg: Any, exc: Exception, n: int) -> None:
        await self.dead_letter(
            subject=subject, payload=msg.data, headers=_headers(msg), error=exc, deliveries=n
        )

    async def _failure_reply(self, base: str, raw: Any, exc: Exception) -> str:
        """The answer to a request whose handler failed, so the requester hears at once.

        A server that could not be reached, or a :class:`TransientError`, answers
        ``{"error", "transient": true}``: the request was fine, ask again. Anything else
        (invalid input, a bug) answers ``{"error"}`` and is dead-lettered with its reason.
        """
        if isinstance(exc, TransientError) or is_unavailable(exc):
            reason = str(exc) if isinstance(exc, TransientError) else _described(exc)
            log.warning("responder_unavailable", subject=base, service=self.service, error=reason)
            return json.dumps({"error": reason, "transient": True})
        if not isinstance(exc, PermanentError):
            log.error("responder_failed", subject=base, service=self.service, exc_info=exc)
            exc = PermanentError(f"internal error: {_described(exc)}")
        await self.dead_letter(subject=base, payload=raw.data, headers=_headers(raw), error=exc)
        return json.dumps({"error": str(exc)})

    def responder(
        self, request_cls: type[E], *, concurrency: int = DEFAULT_RESPONDER_CONCURRENCY
    ) -> Callable[[Callable[[E], Awaitable[BaseModel]]], Callable[[E], Awaitable[BaseModel]]]:
        """Register a request/reply handler (core NATS, queue group per service).

        Up to ``concurrency`` requests are answered at once, each replied to as soon as it
        is done, so a handler that awaits a server does not hold up the requests behind
        it; pass 1 for one at a time. When the broker stops, the requests being answered
        finish first (within its graceful timeout). A request whose handler fails is
        answered at once (see :meth:`_failure_reply`): invalid ones and bugs with
        ``{"error": reason}`` and a dead letter, unreachable servers as transient.
        """
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        base = request_cls.subject
        subject = self.catalog.subject(base)
        slots = asyncio.Semaphore(concurrency)
        tasks: set[asyncio.Task[None]] = set()

        def register(
            fn: Callable[[E], Awaitable[BaseModel]],
        ) -> Callable[[E], Awaitable[BaseModel]]:
            async def answer(raw: Any, in_flight: Any) -> None:
                started = time.perf_counter()
                try:
                    try:
                        reply = (await fn(request_cls.parse(raw.data))).model_dump_json()
                    except Exception as exc:
                        reply = await self._failure_reply(base, raw, exc)
                    if raw.reply:
                        await self.broker.connection.publish(
                            raw.reply, reply.encode(), headers=_JSON_HEADERS
                        )
                except Exception:
                    # The reply itself could not be sent: the requester's timeout reports it.
                    log.exception("responder_failed", subject=base, service=self.service)
                finally:
                    slots.release()
                    in_flight.release()
                metrics.HANDLE_SECONDS.labels(self.service, base).observe(
                    time.perf_counter() - started
                )

            # FastStream only hands each request over, one at a time and without a reply
            # of its own: its concurrent subscriber (``max_workers``) costs several event
            # loop turns per message, which spreads replies over as many socket writes and
            # answered a third as many requests per second. Each request is answered in a
            # task; holding the subscriber's in-flight lock makes the broker's graceful
            # stop wait for it as for any handler.
            sub = self.broker.subscriber(subject, queue=self.service, no_reply=True)

            @sub
            async def dispatch(body: Any) -> None:
                raw = self.broker.context.get_local("message").raw_message
                await slots.acquire()
                in_flight = _in_flight_lock(sub)
                in_flight.acquire()
                task = asyncio.create_task(answer(raw, in_flight))
                tasks.add(task)  # a task nobody references can be collected mid-way
                task.add_done_callback(tasks.discard)

            return fn

        return register


class _NoLock:
    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass


def _in_flight_lock(subscriber: Any) -> Any:
    """The subscriber's count of messages in handling, which a graceful stop waits for."""
    lock = getattr(subscriber, "lock", None)
    return lock if isinstance(lock, MultiLock) else _NoLock()


def _described(exc: BaseException) -> str:
    """``Type: message`` of an unexpected error, for a reply or a dead letter."""
    return f"{type(exc).__name__}: {exc}"
