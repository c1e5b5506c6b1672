"""The agents' SDK: publish a run's timeline to Tally as it happens.

Example:
    >>> import tally
    >>> async with tally.connect("nats://127.0.0.1:4222") as t:       # doctest: +SKIP
    ...     async with t.run("T-42", model="claude-sonnet-4") as run:
    ...         async with run.phase("implement"):
    ...             resp = await client.messages.create(...)
    ...             await run.worker_call(usage=resp.usage.model_dump(), worker="coder")
    ...         await run.verification("pytest -q", passed=True)

Leaving the ``run`` block publishes ``run.finished``: outcome ``complete`` (or what
:meth:`Run.finish` set), ``error`` if the block raised. Every event has its own id, sent
as ``Nats-Msg-Id``, so a retried publish is stored once.

A run also moves its task through the lanes (``task.status_changed``): ``in_progress``
when it starts, ``ready_to_review`` when it succeeds (see :class:`RunLanes`; ``lanes=None``
turns it off). ``t.task("T-42").status("ready_to_qa")`` moves a task by hand.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any

from tally.client import TallyClient
from tally.events import (
    QualitySignals,
    RunEvent,
    RunFinished,
    RunStarted,
    TaskStatusChanged,
    new_id,
    utcnow,
)
from tally.events.runs import Outcome
from tally.events.tasks import TaskStatus
from tally.settings import nats_options


@dataclass(frozen=True)
class RunLanes:
    """Where a run moves its task: on start, on success, on failure (None: leave it)."""

    start: TaskStatus | None = "in_progress"
    success: TaskStatus | None = "ready_to_review"
    failure: TaskStatus | None = None


class Task:
    """A task, to move between lanes."""

    def __init__(self, client: TallyClient, task_id: str, workspace: str) -> None:
        self.client = client
        self.task_id = task_id
        self.workspace = workspace

    async def status(
        self,
        to_status: TaskStatus,
        *,
        from_status: TaskStatus | None = None,
        at: datetime | None = None,
        run_id: str | None = None,
        agent_id: str | None = None,
        **metadata: Any,
    ) -> TaskStatusChanged:
        """Publish ``task.status_changed``: the task is now in ``to_status``.

        Lanes: backlog, in_progress (work), ready_to_review (review), ready_to_qa (QA),
        completed, blocked. Returns the event published.
        """
        event = TaskStatusChanged(
            task_id=self.task_id,
            workspace=self.workspace,
            from_status=from_status,
            to_status=to_status,
            changed_at=at or utcnow(),
            task_run_id=run_id,
            agent_id=agent_id,
            correlation_id=run_id,
            metadata=metadata,
        )
        await self.client.publish(event)
        return event


class Run:
    """One run of a task; publish its events through the methods below."""

    def __init__(
        self, client: TallyClient, task_id: str, run_id: str, workspace: str, started: RunStarted
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.run_id = run_id
        self.workspace = workspace
        self._started = started
        self._events = 0
        self._outcome: Outcome | None = None
        self._success: bool | None = None
        self._quality = QualitySignals()

    async def event(self, kind: str, *, at: datetime | None = None, **detail: Any) -> None:
        """Publish one ``run.event`` of ``kind`` with its fields (validated)."""
        event = RunEvent(
            run_id=self.run_id,
            workspace=self.workspace,
            at=at or utcnow(),
            correlation_id=self.run_id,
            detail={"kind": kind, **detail},
        )
        await self.client.publish(event)
        self._events += 1

    @asynccontextmanager
    async def phase(self, name: str, attempt: int = 1) -> AsyncIterator[None]:
        """A phase of work (plan, implement, verify…): start and end events around the block."""
        await self.event("phase_start", phase=name, attempt=attempt)
        try:
            yield
        finally:
            await self.event("phase_end", phase=name, attempt=attempt)

    @asynccontextmanager
    async def subtask(self, name: str) -> AsyncIterator[dict[str, Any]]:
        """A subtask; set ``quality`` (0..1) or ``success`` in the yielded dict to record them."""
        result: dict[str, Any] = {"success": True}
        await self.event("subtask_started", subtask=name)
        try:
            yield result
        except BaseException:
            result["success"] = False
            raise
        finally:
            await self.event("subtask_completed", subtask=name, **result)

    async def worker_call(self, *, usage: dict[str, Any] | None = None, **fields: Any) -> None:
        """A model call. ``usage`` is the provider's usage payload as-is (OpenAI, Anthropic,
        Gemini, Bedrock, Vercel AI SDK, OpenTelemetry, ...): the tracker normalises it,
        never double-counting cache. ``model`` and ``provider`` default to the run's, so
        the call is priced as the model that made it."""
        for key in ("model", "provider"):
            if fields.get(key) is None and getattr(self._started, key) is not None:
                fields[key] = getattr(self._started, key)
        await self.event("worker_call", usage=usage or {}, **fields)

    async def verification(self, command: str, *, passed: bool, **fields: Any) -> None:
        """A check that ran (tests, lint, build)."""
        await self.event("verification", command=command, passed=passed, **fields)

    async def checkpoint(self, *, verified: bool, commit: str | None = None) -> None:
        await self.event("checkpoint", verified=verified, commit=commit)

    async def changes(
        self, files: list[str] | int, lines_added: int = 0, lines_removed: int = 0
    ) -> None:
        await self.event(
            "changes", files=files, lines_added=lines_added, lines_removed=lines_removed
        )

    async def milestone(self, name: str, status: str = "completed") -> None:
        await self.event("milestone", name=name, status=status)

    async def note(self, text: str) -> None:
        await self.event("note", text=text)

    def finish(
        self, outcome: Outcome = "complete", *, success: bool | None = None, **quality: Any
    ) -> None:
        """Set how the run ends (published when the block exits) and its quality signals."""
        self._outcome = outcome
        self._success = success
        self._quality = QualitySignals(**quality)

    async def _close(self, failed: bool, lanes: RunLanes | None) -> None:
        outcome: Outcome = "error" if failed else (self._outcome or "complete")
        success = self._success if self._success is not None else outcome == "complete"
        success = success and not failed
        finished_at = utcnow()
        await self.client.publish(
            RunFinished(
                run_id=self.run_id,
                task_id=self.task_id,
                workspace=self.workspace,
                outcome=outcome,
                success=success,
                finished_at=finished_at,
                reservation_id=self._started.reservation_id,
                quality=self._quality,
                event_count=self._events,
                correlation_id=self.run_id,
            )
        )
        to_status = None if lanes is None else (lanes.success if success else lanes.failure)
        if to_status is not None:
            await Task(self.client, self.task_id, self.workspace).status(
                to_status,
                from_status=lanes.start if lanes else None,
                at=finished_at,
                run_id=self.run_id,
                agent_id=self._started.agent_id,
            )


class _RunContext:
    def __init__(self, client: TallyClient, started: RunStarted, lanes: RunLanes | None) -> None:
        self.client = client
        self.started = started
        self.lanes = lanes
        self.run: Run | None = None

    async def __aenter__(self) -> Run:
        await self.client.publish(self.started)
        if self.lanes is not None and self.lanes.start is not None:
            await Task(self.client, self.started.task_id, self.started.workspace).status(
                self.lanes.start,
                at=self.started.started_at,
                run_id=self.started.run_id,
                agent_id=self.started.agent_id,
            )
        self.run = Run(
            self.client,
            self.started.task_id,
            self.started.run_id,
            self.started.workspace,
            self.started,
        )
        return self.run

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self.run is not None
        await self.run._close(failed=exc_type is not None, lanes=self.lanes)


class Tally:
    """A connection to Tally for an agent."""

    def __init__(self, client: TallyClient, workspace: str) -> None:
        self.client = client
        self.workspace = workspace

    def task(self, task_id: str) -> Task:
        """A task of this workspace, e.g. ``await t.task("T-42").status("ready_to_qa")``."""
        return Task(self.client, task_id, self.workspace)

    def run(
        self,
        task_id: str,
        *,
        model: str | None = None,
        run_id: str | None = None,
        lanes: RunLanes | None = RunLanes(),  #: frozen, so one shared default is safe
        **fields: Any,
    ) -> _RunContext:
        """Start a run of ``task_id`` (publishes ``run.started`` on entering the block).

        The task moves to ``lanes.start`` when the run starts and to ``lanes.success`` or
        ``lanes.failure`` when it ends; ``lanes=None`` leaves its status alone.
        ``fields`` are the other ``run.started`` fields: ``provider``, ``assignment_id``,
        ``reservation_id``, ``agent_id``, ``agent_ids``, ``command``, ``job_id``.
        """
        started = RunStarted(
            run_id=run_id or f"R-{new_id()[:12]}",
            task_id=task_id,
            model=model,
            workspace=self.workspace,
            started_at=utcnow(),
            **fields,
        )
        return _RunContext(self.client, started, lanes)


@asynccontextmanager
async def connect(
    url: str = "nats://127.0.0.1:4222",
    *,
    workspace: str = "default",
    namespace: str = "",
    source: str = "sdk",
    user: str = "",
    password: str = "",
    tls_ca: str = "",
) -> AsyncIterator[Tally]:
    """Connect an agent to Tally's bus, as ``user`` when the server asks for credentials
    (the shipped configuration's ``agent`` user), over TLS when ``tls_ca`` names the CA
    bundle that signed the server's certificate."""
    options = nats_options(user, password, tls_ca=tls_ca)
    async with TallyClient.connect(
        url, namespace=namespace, source=source, options=options
    ) as client:
        yield Tally(client, workspace)
