"""Durable pull consumers: one event at a time (many in flight) or a list per call.

Both pull through :class:`Puller`, which sends JetStream pull requests itself with a fixed
fetch timeout: a fetch returns at once with what the server has ready, so latency stays low
when traffic is light and batches fill up when it is heavy. FastStream's pull subscribers
go through nats-py's ``fetch``, which on a loaded machine can leave a message unclaimed
until the consumer's whole ``ack_wait`` has passed (we saw 30 s stalls), starts a task and
a timer for every message, and waits for every handler of a fetched batch before pulling
again, so one slow handler holds back the rest.

- :class:`EventConsumer` keeps up to ``concurrency`` handler calls running and pulls more
  as each one finishes. A handler that raises has its message redelivered with a growing
  delay (``TransientError.delay_s`` times the delivery count) until its last delivery,
  which is dead-lettered; a permanent error is dead-lettered at once. A server out of
  reach (Postgres restarting, a refused connection) is not the message's fault: it is
  redelivered with a growing delay until the server is back, never dead-lettered.
- :class:`BatchConsumer` hands the handler a list (one multi-row insert per batch beats one
  insert per message: the tracker). While one batch is being written and acknowledged,
  the next one is fetched and validated, which is what keeps the tracker near the speed
  of a bare fetch-and-COPY loop (``benchmarks/tracker.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import nats
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DEFAULT_PREFIX, AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError

from tally import metrics
from tally.errors import Deferred, TransientError, ValidationFailed, is_permanent, is_unavailable
from tally.events import Event

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)
DeadLetterFn = Callable[[str, Msg, Exception, int], Awaitable[None]]


def deliveries(msg: Msg) -> int:
    """How many times the server has delivered ``msg`` (1 on the first delivery)."""
    try:
        return int(msg.metadata.num_delivered)
    except (AttributeError, TypeError, ValueError, nats.errors.Error):
        return 1


class _Request:
    """A pull request the server may still deliver to."""

    __slots__ = ("expires_at", "remaining", "token")

    def __init__(self, token: str, batch: int, expires_at: float) -> None:
        self.token = token
        #: messages the server may still deliver for it; 0 once a status has ended it
        self.remaining = batch
        #: monotonic time the server lets it expire
        self.expires_at = expires_at

    def open(self, now: float) -> bool:
        return self.remaining > 0 and now < self.expires_at


class Puller:
    """Pull requests to one durable consumer, answered on the puller's own inbox.

    Each request is answered on a subject of its own under the puller's inbox, so a
    status (``404`` nothing pending, ``408`` expired) ends the request it belongs to and
    no other, however late it arrives. Messages, whichever request they answer, are kept
    for the next fetch, never dropped.

    A fetch that finds nothing waiting leaves an expiring request open on the server
    (``timeout``): until it expires or is filled, the server delivers each new message
    to it as the message arrives, so light traffic costs no pull request per message —
    one every ``timeout`` — and no status answers to read. An ``eager`` puller returns
    as soon as a message arrives instead of waiting for a full batch (or the timeout):
    waiting would only add latency. With no request open, what is waiting when a fetch
    starts is asked for at once and taken whole.
    """

    #: A request this close to its expiry is treated as expired (its end is on the way).
    EXPIRY_MARGIN_S = 0.05

    def __init__(self, nc: NATS, stream: str, durable: str, *, eager: bool = False) -> None:
        self._nc = nc
        self._eager = eager
        self._next_subject = f"{DEFAULT_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self._inbox = nc.new_inbox()
        self._sub: Subscription | None = None
        self._ready: list[Msg] = []
        self._sent = 0
        #: requests the server may still answer, by token
        self._requests: dict[str, _Request] = {}
        #: the expiring request left open for new messages (see the class docstring)
        self._open: _Request | None = None
        self._wake: asyncio.Future[None] | None = None
        self._refusal: str | None = None
        self._interrupted = False
        #: monotonic time the server last answered a pull request (messages or a status)
        self.last_answer = 0.0

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(f"{self._inbox}.*", cb=self._on_msg)

    def interrupt(self) -> None:
        """End the fetch in progress now (it returns what it has, maybe nothing)."""
        self._interrupted = True
        self._poke()

    async def stop(self) -> None:
        """Stop receiving; messages received but not handed out go back to the server."""
        if self._sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._sub.unsubscribe()
            self._sub = None
        ready, self._ready = self._ready, []
        for msg in ready:
            with contextlib.suppress(nats.errors.Error):
                await msg.nak()

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages: those ready now, else the first to arrive in ``timeout``.

        Raises:
            TimeoutError: nothing arrived in time.
            nats.errors.Error: the server refused the request (its status says why).
        """
        self._refusal = None
        loop = asyncio.get_running_loop()
        if len(self._ready) < batch and not self._pushing(loop.time()):
            # What the server has ready now, taken whole: the request is answered when
            # the batch is full or a status says nothing more is pending.
            probe = await self._send({"batch": batch - len(self._ready), "no_wait": True})
            await self._until(lambda: probe.remaining <= 0, timeout + 1.0)
            if not self._ready and not self._interrupted and not self._refusal:
                self._open = await self._send(
                    {"batch": batch, "expires": int(timeout * 1e9)}, timeout
                )
        if not self._ready and not self._interrupted and not self._refusal:
            # The server delivers to the open request as messages arrive. Its expiry (or
            # a lost connection: the extra second) bounds the wait; an eager fetch returns
            # with the first message, another once the request is full or has ended.
            request = self._open
            if request is not None and request.remaining > 0:
                left = max(0.0, request.expires_at - loop.time()) + 1.0
                await self._until(
                    lambda: request.remaining <= 0 or (self._eager and bool(self._ready)), left
                )
        if not self._ready:
            if self._refusal:
                refusal, self._refusal = self._refusal, None
                raise nats.errors.Error(f"pull request refused: {refusal}")
            raise TimeoutError
        msgs, self._ready = self._ready[:batch], self._ready[batch:]
        return msgs

    def _pushing(self, now: float) -> bool:
        """Whether a request left open will take the waiting messages anyway."""
        request = self._open
        return request is not None and request.open(now + self.EXPIRY_MARGIN_S)

    async def _send(self, request: dict[str, Any], timeout: float = 0.0) -> _Request:
        now = asyncio.get_running_loop().time()
        # A request whose end never came (a lost connection) is forgotten after a while.
        for stale in [r for r in self._requests.values() if r.expires_at < now - 5.0]:
            del self._requests[stale.token]
        self._sent += 1
        token = str(self._sent)
        # A no-wait request is answered at once; its end is expected within a second.
        expires_at = now + (timeout if timeout else 1.0)
        pending = self._requests[token] = _Request(token, request["batch"], expires_at)
        await self._nc.publish(
            self._next_subject, json.dumps(request).encode(), f"{self._inbox}.{token}"
        )
        return pending

    async def _until(self, done: Callable[[], bool], timeout: float) -> None:
        """Wait until ``done()`` holds, the fetch is interrupted, or ``timeout`` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done() and not self._interrupted and not self._refusal:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._wake = wake = loop.create_future()
            timer = loop.call_later(left, _wake_up, wake)
            try:
                await wake
            finally:
                timer.cancel()
                self._wake = None

    def _poke(self) -> None:
        if self._wake is not None:
            _wake_up(self._wake)

    async def _on_msg(self, msg: Msg) -> None:
        self.last_answer = time.monotonic()
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._ready.append(msg)
            # A message carries its own subject, not the request's: it answers the oldest
            # request still open (the server serves them in the order they came).
            request = next((r for r in self._requests.values() if r.remaining > 0), None)
            if request is not None:
                request.remaining -= 1
        elif status == "100":  # idle heartbeat or flow control: not an answer
            return
        else:
            # A status is sent to the request's own reply subject.
            request = self._requests.get(msg.subject.rpartition(".")[2])
            if status not in ("404", "408"):  # 404: nothing pending, 408: request expired
                description = msg.headers.get("Description", "") if msg.headers else ""
                self._refusal = f"{status} {description}".strip()
            if request is not None:
                request.remaining = 0
        if request is not None and request.remaining <= 0:
            del self._requests[request.token]
        self._poke()


def _wake_up(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _PullConsumer(ABC):
    """A durable pull consumer created (or bound) at start and pulled by one supervised task.

    The pull loop never dies quietly: an unexpected exception is logged with the
    consumer's name, counted in ``tally_consumer_restarts_total``, and the loop starts
    again after a growing back-off. :meth:`health` says whether it is pulling now, which
    the service's ``/healthz`` reports.
    """

    kind = "pull"
    eager = False
    #: Back-off before a crashed loop starts again: doubles from the first to the last.
    RESTART_BACKOFF_S = (0.2, 10.0)
    #: Redelivery delay of a message that failed because a server could not be reached:
    #: the first delivery's, growing with each delivery up to the last value.
    unavailable_backoff_s = (1.0, 30.0)

    def __init__(
        self,
        *,
        service: str,
        subject: str,
        stream: str,
        durable: str,
        dead_letter: DeadLetterFn,
        fetch_timeout_s: float,
        max_deliver: int,
        ack_wait_s: float,
    ) -> None:
        self.service = service
        self.subject = subject
        self.stream = stream
        self.durable = durable
        self.dead_letter = dead_letter
        self.fetch_timeout_s = fetch_timeout_s
        self.max_deliver = max_deliver
        self.ack_wait_s = ack_wait_s
        self._task: asyncio.Task[None] | None = None
        self._puller: Puller | None = None
        self._running = False
        self._stopped = asyncio.Event()
        #: times the loop crashed and was started again
        self.restarts = 0
        #: the last crash, while the loop has not pulled successfully since
        self.error: str | None = None

    async def start(self, nc: NATS) -> None:
        """Create (or bind to) the durable consumer and start pulling."""
        await self._ensure(nc)
        self._running = True
        self._stopped.clear()
        self._task = asyncio.create_task(self._supervise(nc), name=f"{self.kind}:{self.durable}")

    async def _ensure(self, nc: NATS) -> None:
        js = nc.jetstream()
        try:  # an existing consumer is bound as it is, as nats-py's pull_subscribe does
            await js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await js.add_consumer(
                self.stream,
                ConsumerConfig(
                    name=self.durable,
                    durable_name=self.durable,
                    filter_subject=self.subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    # Unlimited: we decide when a message is dead-lettered (its last
                    # delivery), and one whose letter cannot be sent is never dropped.
                    max_deliver=-1,
                    ack_wait=self.ack_wait_s,
                ),
            )

    async def stop(self) -> None:
        """Stop pulling; handler calls in progress finish and are acknowledged first."""
        self._running = False
        self._stopped.set()
        if self._puller is not None:
            self._puller.interrupt()
        if self._task:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self, nc: NATS) -> None:
        """Run the pull loop until stopped, starting it again whenever it crashes."""
        backoff, longest = self.RESTART_BACKOFF_S
        while self._running:
            try:
                if self.error is not None:
                    await self._ensure(nc)  # the consumer may have been deleted meanwhile
                puller = self._puller = Puller(nc, self.stream, self.durable, eager=self.eager)
                await puller.start()
                await self._loop(puller)
                return
            except Exception as exc:
                self.restarts += 1
                self.error = repr(exc)
                metrics.CONSUMER_RESTARTS.labels(self.service, self.durable).inc()
                log.exception(
                    "consumer_crashed", consumer=self.durable, subject=self.subject, error=repr(exc)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            backoff = min(backoff * 2, longest)

    def health(self, stale_after_s: float) -> dict[str, Any]:
        """This consumer's liveness, as ``/healthz`` shows it.

        Args:
            stale_after_s: how long without a server answer or a finished handler call
                counts as stalled.
        """
        now = time.monotonic()
        last = max(self._puller.last_answer if self._puller else 0.0, self._progress)
        age = now - last if last else None
        alive = bool(self._task and not self._task.done()) and self.error is None
        ok = alive and age is not None and age <= stale_after_s
        return {
            "consumer": self.durable,
            "subject": self.subject,
            "ok": ok,
            "alive": alive,
            "last_progress_s": round(age, 3) if age is not None else None,
            "restarts": self.restarts,
            "error": self.error,
        }

    _progress = 0.0

    def _unavailable_delay(self, n: int) -> float:
        first, longest = self.unavailable_backoff_s
        return min(longest, first * n)

    def _made_progress(self) -> None:
        self._progress = time.monotonic()
        self.error = None

    @abstractmethod
    async def _loop(self, puller: Puller) -> None:
        """Pull and handle until :meth:`stop`; then stop the puller."""

    async def _pull(self, puller: Puller, n: int) -> list[Msg]:
        """Up to ``n`` messages, or none after a timeout or a refused request.

        A server that answered (even "nothing pending") counts as progress; a connection
        error is logged and retried after a second, while ``/healthz`` turns red once the
        consumer has gone stale.
        """
        try:
            msgs = await puller.fetch(n, self.fetch_timeout_s)
        except TimeoutError:
            if puller.last_answer and time.monotonic() - puller.last_answer < 2 * (
                self.fetch_timeout_s + 1.0
            ):
                self._made_progress()
            return []
        except nats.errors.Error as exc:
            log.warning("fetch_failed", subject=self.subject, error=repr(exc))
            await asyncio.sleep(1.0)
            return []
        self._made_progress()
        return msgs


class EventConsumer(_PullConsumer, Generic[E]):
    """A durable pull consumer whose handler takes one event, up to ``concurrency`` at once."""

    kind = "events"
    eager = True

    def __init__(
        self,
        *,
        event_cls: type[E],
        handler: Callable[[E], Awaitable[None]],
        concurrency: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_cls = event_cls
        self.handler = handler
        self.concurrency = concurrency

    async def _loop(self, puller: Puller) -> None:
        running: set[asyncio.Task[None]] = set()
        try:
            while self._running:
                if len(running) >= self.concurrency:
                    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                    continue
                for msg in await self._pull(puller, self.concurrency - len(running)):
                    task = asyncio.create_task(self.handle(msg))
                    running.add(task)
                    task.add_done_callback(running.discard)
        finally:
            if running:
                await asyncio.gather(*running, return_exceptions=True)
            await puller.stop()

    async def handle(self, msg: Msg) -> None:
        """Validate and handle one message, then acknowledge it (or have it redelivered)."""
        base = self.event_cls.subject
        started = time.perf_counter()
        try:
            await self.handler(self.event_cls.parse(msg.data))
        except Exception as exc:
            await self._fail(base, msg, exc)
            return
        await msg.ack()
        metrics.HANDLE_SECONDS.labels(self.service, base).observe(time.perf_counter() - started)

    async def _fail(self, base: str, msg: Msg, exc: Exception) -> None:
        """Dead-letter a permanent failure; redeliver anything else until its last try.

        An unexpected exception (a server dropping a connection, a bug) counts as
        transient: it is retried with growing delays, and dead-lettered on the last
        delivery. A :class:`~tally.errors.Deferred` message is redelivered until it has
        waited its ``max_wait_s``, without counting as a retry.
        """
        n = deliveries(msg)
        if isinstance(exc, Deferred):
            if _age_s(msg) < exc.max_wait_s:
                metrics.EVENTS_DEFERRED.labels(self.service, base).inc()
                await msg.nak(delay=exc.delay_s)
                return
        elif is_unavailable(exc):
            metrics.HANDLER_RETRIES.labels(self.service, base).inc()
            log.warning("server_unavailable", subject=base, error=repr(exc), deliveries=n)
            await msg.nak(delay=self._unavailable_delay(n))
            return
        elif not is_permanent(exc) and n < self.max_deliver:
            delay = exc.delay_s if isinstance(exc, TransientError) else 1.0
            metrics.HANDLER_RETRIES.labels(self.service, base).inc()
            log.warning("handler_retry", subject=base, error=repr(exc), deliveries=n)
            await msg.nak(delay=delay * n)
            return
        await _dead_letter_or_keep(self, base, msg, exc, n)


async def _dead_letter_or_keep(
    consumer: _PullConsumer, base: str, msg: Msg, exc: Exception, n: int
) -> bool:
    """Dead-letter ``msg`` and acknowledge it; if the letter cannot be sent, keep the
    message (redelivered later, never dropped) and say so in a log and a metric.

    Returns:
        Whether the message was dead-lettered.
    """
    try:
        await consumer.dead_letter(base, msg, exc, n)
    except Exception as failed:
        metrics.DEAD_LETTER_FAILURES.labels(consumer.service, base).inc()
        log.error(
            "dead_letter_failed",
            subject=base,
            consumer=consumer.durable,
            error=repr(failed)[:500],
            reason=repr(exc)[:500],
        )
        with contextlib.suppress(Exception):
            await msg.nak(delay=min(30.0, 2.0 * n))
        return False
    await msg.ack()
    return True


def _age_s(msg: Msg) -> float:
    """Seconds since the server stored ``msg`` (0 if it cannot tell)."""
    try:
        stored = msg.metadata.timestamp
    except (AttributeError, TypeError, ValueError, nats.errors.Error):
        return 0.0
    return max(0.0, time.time() - stored.timestamp()) if stored else 0.0


class BatchConsumer(_PullConsumer, Generic[E]):
    """A durable pull consumer whose handler takes a list of events."""

    kind = "batch"
    #: A batch is what is waiting when the handler is free: a fetch that finds nothing
    #: returns with the first message to arrive, never waiting for a batch to fill.
    eager = True

    def __init__(
        self,
        *,
        event_cls: type[E],
        handler: Callable[[list[E]], Awaitable[None]],
        batch_size: int,
        concurrency: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.event_cls = event_cls
        self.handler = handler
        self.batch_size = batch_size
        self.concurrency = concurrency

    async def _loop(self, puller: Puller) -> None:
        # Fetching and validating the next batch overlap the handling of the previous
        # ones. With ``concurrency`` 1 handler calls run one at a time and in order, so a
        # handler sees the batches in the order they were delivered; more lets batches
        # whose handling mostly waits on servers overlap (order between them is lost).
        writing: set[asyncio.Task[None]] = set()
        try:
            while self._running:
                msgs = await self._pull(puller, self.batch_size)
                if not msgs:
                    continue
                started = time.perf_counter()
                events, good = await self._validate(msgs)
                validated_s = time.perf_counter() - started
                while len(writing) >= self.concurrency:
                    await asyncio.wait(writing, return_when=asyncio.FIRST_COMPLETED)
                if events:
                    task = asyncio.create_task(self._commit(events, good, validated_s))
                    writing.add(task)
                    task.add_done_callback(writing.discard)
        finally:
            if writing:
                await asyncio.gather(*writing, return_exceptions=True)
            await puller.stop()

    async def handle(self, msgs: list[Msg]) -> None:
        """Validate, handle and acknowledge one batch."""
        started = time.perf_counter()
        events, good = await self._validate(msgs)
        if events:
            await self._commit(events, good, time.perf_counter() - started)

    async def _validate(self, msgs: list[Msg]) -> tuple[list[E], list[Msg]]:
        """Parse every message; dead-letter and acknowledge the invalid ones.

        Returns:
            The valid events and their messages, in the order received.
        """
        events: list[E] = []
        good: list[Msg] = []
        parse = self.event_cls.parse
        for msg in msgs:
            try:
                events.append(parse(msg.data))
                good.append(msg)
            except ValidationFailed as exc:
                await _dead_letter_or_keep(self, self.event_cls.subject, msg, exc, deliveries(msg))
        return events, good

    async def _commit(self, events: list[E], good: list[Msg], validated_s: float) -> None:
        """Run the handler, then acknowledge the batch (or have it redelivered).

        A batch that fails is tried again one event at a time at once, so one poisonous
        event (a value Postgres refuses) is dead-lettered alone and the rest are stored.
        """
        base = self.event_cls.subject
        started = time.perf_counter() - validated_s
        try:
            await self.handler(events)
        except Exception as exc:
            # A server out of reach fails every event alike: no use trying them one by one.
            if len(events) == 1 or is_unavailable(exc):
                await self._retry(base, good, exc)
                return
            log.warning("batch_split", subject=base, error=repr(exc)[:500], size=len(events))
            for event, msg in zip(events, good, strict=True):
                await self._commit([event], [msg], 0.0)
            return
        # An ack is a buffered publish: awaiting them in turn costs less than a task each.
        for msg in good:
            await msg.ack()
        metrics.HANDLE_SECONDS.labels(self.service, base).observe(time.perf_counter() - started)

    async def _retry(self, base: str, msgs: list[Msg], exc: Exception) -> None:
        """Redeliver a failed batch with a delay; dead-letter messages out of deliveries,
        and at once if the failure is permanent."""
        permanent = is_permanent(exc)
        # Not the messages' fault: redelivered until the server is back, never dead-lettered.
        unavailable = not permanent and is_unavailable(exc)
        if not permanent:
            metrics.HANDLER_RETRIES.labels(self.service, base).inc()
            log.warning("batch_retry", subject=base, error=repr(exc)[:500], size=len(msgs))
        delay = exc.delay_s if isinstance(exc, TransientError) else 1.0
        for msg in msgs:
            n = deliveries(msg)
            if unavailable:
                await msg.nak(delay=self._unavailable_delay(n))
            elif permanent or n >= self.max_deliver:
                await _dead_letter_or_keep(self, base, msg, exc, n)
            else:
                await msg.nak(delay=delay * n)
