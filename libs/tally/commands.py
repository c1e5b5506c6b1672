"""The commands Tally's clients send, built and sent the same way by the CLI and the API.

A command is an event on the bus (``task.created``, ``task.status_changed``) or a
request to a service (``task.estimate``, ``quota.usage``, ``quota.freeze``). Nothing
here touches a database: the services that own the data act on what is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tally.client import TallyClient, next_event
from tally.errors import StepTimeout
from tally.events import (
    Estimate,
    TaskAssigned,
    TaskCreated,
    TaskDeferred,
    TaskEstimated,
    TaskStatusChanged,
    new_id,
    utcnow,
)


def created_event_id(workspace: str, key: str) -> str:
    """The event id of a task created under an idempotency key: the same key in the same
    workspace always gives the same id, so JetStream and the services store it once.

    Example:
        >>> created_event_id("acme", "k1") == created_event_id("acme", "k1")
        True
    """
    digest = hashlib.sha256(f"{workspace}\x00{key}".encode()).hexdigest()
    return f"task-created-{digest[:40]}"


def task_created(
    *,
    source: str,
    workspace: str,
    task_id: str | None = None,
    idempotency_key: str | None = None,
    **fields: Any,
) -> TaskCreated:
    """The ``task.created`` event of a new task (raises ValidationError naming the field).

    A caller's ``task_id`` or ``idempotency_key`` fixes the event id, so sending the same
    request again is a no-op (a duplicate on the bus); without either, every call is a
    new task.

    Args:
        source: who sends it (``cli``, ``api``).
        task_id: the caller's id for the task; without one it is derived from the key,
            or new.
        fields: the task (title, description, priority, labels, task_type, subtasks,
            deadline, dependencies, plan_id, team_estimate).
    """
    key = idempotency_key or (f"id:{task_id}" if task_id else None)
    if key is not None:
        fields["event_id"] = created_event_id(workspace, key)
    return TaskCreated(
        task_id=task_id or f"T-{(fields.get('event_id') or new_id())[-10:]}",
        workspace=workspace,
        source=source,
        **fields,
    )


def status_changed(
    *,
    task_id: str,
    to_status: str,
    source: str,
    changed_at: datetime | None = None,
    **fields: Any,
) -> TaskStatusChanged:
    """The ``task.status_changed`` event moving a task to ``to_status`` (now by default)."""
    return TaskStatusChanged(
        task_id=task_id,
        to_status=to_status,
        changed_at=changed_at or utcnow(),
        source=source,
        **fields,
    )


@dataclass
class TaskProgress:
    """What came back about a published task: its estimate, then an assignment or deferral."""

    task_id: str
    #: The bus had this event already (a retry): nothing new was sent or awaited.
    duplicate: bool = False
    estimate: Estimate | None = None
    assigned: TaskAssigned | None = None
    deferred: TaskDeferred | None = None

    @property
    def settled(self) -> bool:
        """The task was estimated and either assigned or deferred."""
        return self.estimate is not None and (self.assigned or self.deferred) is not None


async def create_task(
    client: TallyClient,
    event: TaskCreated,
    *,
    timeout: float,
    strict: bool = True,
    on_estimate: Callable[[Estimate], None] | None = None,
) -> TaskProgress:
    """Publish ``event`` and follow the task through estimation and assignment.

    Args:
        timeout: seconds to wait for each step.
        strict: raise :class:`StepTimeout` when a step does not answer; when False,
            return what arrived in time (the task was published all the same).
        on_estimate: called with the estimate as soon as it arrives.
    """
    progress = TaskProgress(event.task_id)
    same_task = lambda e: e.task_id == event.task_id  # noqa: E731
    async with (
        client.watch(TaskEstimated, same_task) as estimated,
        client.watch(TaskAssigned, same_task) as assigned,
        client.watch(TaskDeferred, same_task) as deferred,
    ):
        if not await client.publish(event):
            progress.duplicate = True
            return progress
        try:
            progress.estimate = (
                await next_event(estimated, step="estimator", timeout=timeout)
            ).estimate
            if on_estimate:
                on_estimate(progress.estimate)
            answer = await first_of(assigned, deferred, timeout=timeout)
        except StepTimeout:
            if strict:
                raise
            return progress
        if isinstance(answer, TaskAssigned):
            progress.assigned = answer
        else:
            progress.deferred = answer
    return progress


async def first_of(
    assigned: asyncio.Queue[TaskAssigned], deferred: asyncio.Queue[TaskDeferred], timeout: float
) -> TaskAssigned | TaskDeferred:
    """The first assignment or deferral to arrive, or :class:`StepTimeout` (assigner)."""
    tasks: list[asyncio.Future[TaskAssigned | TaskDeferred]] = [
        asyncio.ensure_future(assigned.get()),
        asyncio.ensure_future(deferred.get()),
    ]
    done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    if not done:
        raise StepTimeout("assigner", timeout)
    return done.pop().result()
