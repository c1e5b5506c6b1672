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


class RetryFailed(Exception):
    """Some deferred tasks of a round could not be retried (the others were)."""


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
        errors: list[str] = []
        for state in due:
            failed = state.failed_models
            try:
                result = await self.assigner.assign(
                    state.estimated,
                    state.attempt,
                    failed_models=failed,
                    escalate_from=failed[-1] if failed else None,
                )
            except Exception as exc:  # one task's failure holds up no other
                log.exception("deferred_retry_failed", task_id=state.estimated.task_id)
                errors.append(f"{state.estimated.task_id}: {exc!r}")
                continue
            assigned += isinstance(result, TaskAssigned)
        if due:
            log.info("deferred_retried", tried=len(due), assigned=assigned, failed=len(errors))
        if errors:
            # The round is a crash of the retrier: counted, red /healthz, retried after
            # the supervisor's back-off; the tasks stay deferred.
            raise RetryFailed(f"{len(errors)} deferred task(s) failed: {'; '.join(errors[:5])}")
        return assigned

    async def run(self) -> None:
        """Retry forever: everything at start, after a wake-up or a UTC day change."""
        everything = True
        while True:
            await self.retry_once(everything=everything)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval_s)
            everything = self._wake.is_set()
            self._wake.clear()
            today = self.clock().date()
            if today != self._day:  # a day (and maybe a month) window rolled over
                self._day, everything = today, True
