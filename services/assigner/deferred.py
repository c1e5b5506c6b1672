"""Retrying deferred tasks: when quota frees, when a window rolls over, and on a timer.

Deferred tasks live in Postgres (``assigner_tasks``), so a restarted assigner still has
them; it retries all of them (bounded) as it starts, since notices sent while it was down
are lost. Each round retries at most ``batch`` tasks, most valuable first.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from services.assigner.assigner import Assigner
from services.assigner.repo import AssignmentRepo
from tally.events import TaskAssigned, utcnow

log = structlog.get_logger(__name__)


class DeferredRetrier:
    """Retries deferred tasks in the background of an assigner."""

    def __init__(
        self,
        assigner: Assigner,
        repo: AssignmentRepo,
        *,
        interval_s: float,
        batch: int,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.assigner = assigner
        self.repo = repo
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self._wake = asyncio.Event()
        self._day = clock().date()
        self._task: asyncio.Task[None] | None = None

    def wake(self, subscription: str | None = None) -> None:
        """Quota freed (for ``subscription``): retry every deferred task, not only due ones."""
        self._wake.set()

    async def retry_once(self, *, everything: bool) -> int:
        """One round; returns how many tasks were assigned.

        Args:
            everything: retry deferred tasks whatever their ``retry_after`` (quota was
                freed or a window rolled over); else only those due.
        """
        due = await self.repo.deferred(
            limit=self.batch, due_by=None if everything else self.clock()
        )
        assigned = 0
        for state in due:
            failed = state.failed_models
            result = await self.assigner.assign(
                state.estimated,
                state.attempt,
                failed_models=failed,
                escalate_from=failed[-1] if failed else None,
            )
            assigned += isinstance(result, TaskAssigned)
        if due:
            log.info("deferred_retried", tried=len(due), assigned=assigned)
        return assigned

    async def run(self) -> None:
        """Retry forever: everything at start, after a wake-up or a UTC day change."""
        everything = True
        while True:
            try:
                await self.retry_once(everything=everything)
            except Exception:  # one failed round must not stop the next
                log.exception("deferred_retry_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            everything = self._wake.is_set()
            self._wake.clear()
            today = self.clock().date()
            if today != self._day:  # a day (and maybe a month) window rolled over
                self._day, everything = today, True

    def start(self) -> None:
        """Run in the background (services supervise :meth:`run` instead)."""
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
