"""The learner's job workers: take queued jobs, P0 first, and run them.

Jobs wait on the ``LEARNING_JOBS`` work-queue stream, one durable pull consumer per
priority (shared by every learner replica). A pool of ``size`` slots asks the P0 consumer
first, then P1, then P2, whenever a slot is free, so a P0 job queued after many P2 jobs
still starts before them. A taken message stays unacknowledged while its job runs, kept
alive by ``in_progress`` heartbeats; it is acknowledged (and leaves the queue) when the
job ends. A worker killed with ``kill -9`` stops the heartbeats: after ``ack_wait`` the
server hands the message to another worker, which claims the job (a new epoch) and
resumes it from its last written iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import nats.errors
import structlog
from nats.js.api import ConsumerConfig

from services.learner.jobs.runner import JobRunner, Outcome
from services.learner.jobs.store import JobStore
from tally import metrics
from tally.bus import Bus
from tally.errors import ValidationFailed
from tally.events.jobs import PRIORITIES, QUEUED
from tally.settings import ServiceSettings

log = structlog.get_logger(__name__)

#: How long each priority's consumer is asked before the next (seconds): an idle pool
#: asks all three about three times a second.
FETCH_WAIT = {"P0": 0.2, "P1": 0.05, "P2": 0.05}
STATUSES = ("queued", "running", "evaluating", "completed", "failed", "cancelled")


class JobPool:
    """``size`` job workers in this process.

    Args:
        settings: the learner's connection settings.
        bus: publishes queued jobs again when their message was lost.
        runner: runs one job.
        size: jobs run at once.
        ack_wait_s: how long a job's message survives its worker's silence.
        on_completed: called with the id of each job that completed here.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        bus: Bus,
        runner: JobRunner,
        *,
        size: int,
        ack_wait_s: float,
        on_completed: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"job workers: size must be at least 1, got {size}")
        self.settings = settings
        self.bus = bus
        self.runner = runner
        self.size = size
        self.ack_wait_s = ack_wait_s
        self.on_completed = on_completed
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    async def run(self) -> None:
        """Take and run jobs until cancelled (supervised: restarted if it fails)."""
        nc = await nats.connect(
            self.settings.nats_url,
            name="learner-jobs",
            max_reconnect_attempts=-1,
            **self.settings.nats_options(),
        )
        tasks: set[asyncio.Task[None]] = set()
        try:
            subs = await self._subscribe(nc)
            slots = asyncio.Semaphore(self.size)
            while True:
                await slots.acquire()
                msg = await self._next(subs)
                row = None if msg is None else await self._claim(msg)
                if row is None:
                    slots.release()
                    continue
                # Claimed here, one at a time, so jobs start in the order they were taken.
                task = asyncio.create_task(self._work(msg, row, slots))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await nc.close()

    async def _subscribe(self, nc: Any) -> list[tuple[str, Any]]:
        js = nc.jetstream()
        catalog = self.bus.catalog
        subs: list[tuple[str, Any]] = []
        for priority in PRIORITIES:
            base = QUEUED[priority].subject
            sub = await js.pull_subscribe(
                catalog.subject(base),
                durable=catalog.durable("learner", base),
                stream=catalog.stream_for(base),
                config=ConsumerConfig(ack_wait=self.ack_wait_s, max_deliver=-1),
            )
            subs.append((priority, sub))
        return subs

    async def _next(self, subs: list[tuple[str, Any]]) -> Any:
        for priority, sub in subs:
            try:
                msgs = await sub.fetch(1, timeout=FETCH_WAIT[priority])
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            if msgs:
                return msgs[0]
        return None

    async def _claim(self, msg: Any) -> Any:
        """The claimed job of a queue message, or None (the message is settled here)."""
        try:
            event = QUEUED["P1"].parse(msg.data)
        except ValidationFailed as exc:  # never runnable: dead-lettered with the reason
            await self.bus.dead_letter(
                subject=msg.subject, payload=msg.data, headers=dict(msg.headers or {}), error=exc
            )
            await msg.ack()
            return None
        try:
            row = await self.runner.claim(event.job_id, self.worker, self.ack_wait_s / 2)
        except Exception:
            log.exception("learning_job_claim_failed", subject=msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=5)
            return None
        if row == "busy":  # a live worker has it: ask again once it may have gone silent
            await msg.nak(delay=self.ack_wait_s / 2)
            return None
        if isinstance(row, str):  # over, or unknown: the message has nothing left to do
            await msg.ack()
            return None
        return row

    async def _work(self, msg: Any, row: Any, slots: asyncio.Semaphore) -> None:
        beat = asyncio.create_task(self._heartbeat(msg))
        try:
            outcome = await self.runner.run(row)
            await msg.ack()
            if outcome.status == "completed" and self.on_completed is not None:
                await self.on_completed(row.job_id)
        except asyncio.CancelledError:
            # Stopping: hand the job to another worker now rather than after ack_wait.
            with contextlib.suppress(Exception):
                await msg.nak()
            raise
        except Exception:
            log.exception("learning_job_worker_failed", job_id=row.job_id)
            with contextlib.suppress(Exception):
                await msg.nak(delay=5)
        finally:
            beat.cancel()
            slots.release()

    async def _heartbeat(self, msg: Any) -> None:
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()

    async def watch(
        self, store: JobStore, every_s: float = 5.0, requeue_after_s: float = 60.0
    ) -> None:
        """Keep ``tally_learning_jobs{status}`` current, and queue again any job still
        queued after ``requeue_after_s`` whose message was lost (same id: a message still
        on the queue is not doubled)."""
        while True:
            counts = await store.counts()
            for status in STATUSES:
                metrics.LEARNING_JOBS.labels(status).set(counts.get(status, 0))
            cutoff = datetime.now(UTC) - timedelta(seconds=requeue_after_s)
            for row in await store.queued_before(cutoff):
                await self.bus.publish(
                    QUEUED[row.priority](
                        event_id=f"queued-{row.job_id}",
                        job_id=row.job_id,
                        priority=row.priority,
                        workspace=row.workspace,
                    )
                )
            await asyncio.sleep(every_s)


__all__ = ["JobPool", "Outcome"]
