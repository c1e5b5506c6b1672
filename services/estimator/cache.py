"""Each workspace's models, built once per change of its history and kept warm.

One build per workspace at a time (single-flight): every estimate that arrives while a
workspace is being built waits for that build instead of starting its own. The CPU part of
a build runs in a worker thread, so the event loop keeps answering other workspaces. A
built model is kept until its history changes: this process invalidates it when it stores
an import or hears of a new calibration, and every ``check_interval_s`` a cheap fingerprint
query (row counts and newest positions and times) notices changes other replicas made.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import structlog

from services.estimator.workspace import WorkspaceModel

log = structlog.get_logger(__name__)

#: Reads a workspace's fingerprint (anything comparable that changes with its history).
Fingerprint = Callable[[str], Awaitable[Hashable]]
#: Loads a workspace's history and builds its model (the CPU part off the event loop).
Build = Callable[[str], Awaitable[WorkspaceModel]]


@dataclass
class _Entry:
    model: WorkspaceModel | None = None
    fingerprint: Hashable | None = None
    checked_at: float = 0.0
    #: Bumped by every invalidation; a build records the one it started from.
    generation: int = 0
    built_generation: int = -1
    building: asyncio.Task[None] | None = None


@dataclass
class WorkspaceCache:
    """Warm, single-flight workspace models.

    Args:
        fingerprint: Reads what changes with a workspace's history.
        build: Loads and builds a workspace's model.
        check_interval_s: How often, at most, a warm workspace's fingerprint is read.
    """

    fingerprint: Fingerprint
    build: Build
    check_interval_s: float = 1.0
    #: Builds started, by workspace (for health and tests).
    builds: dict[str, int] = field(default_factory=dict)
    _entries: dict[str, _Entry] = field(default_factory=dict)

    def invalidate(self, workspace: str) -> None:
        """Mark a workspace's model out of date: the next estimate waits for a rebuild."""
        entry = self._entries.setdefault(workspace, _Entry())
        entry.generation += 1

    async def get(self, workspace: str) -> WorkspaceModel:
        """The workspace's current model, building it (once) when missing or out of date."""
        entry = self._entries.setdefault(workspace, _Entry())
        now = time.monotonic()
        if entry.model is not None and entry.built_generation == entry.generation:
            if now - entry.checked_at < self.check_interval_s:
                return entry.model
            entry.checked_at = now
            if await self.fingerprint(workspace) == entry.fingerprint:
                return entry.model
            entry.generation += 1
        while entry.model is None or entry.built_generation != entry.generation:
            if entry.building is None or entry.building.done():
                entry.building = asyncio.create_task(self._build(workspace, entry))
            # Shielded: a caller that times out does not cancel the build others wait for.
            await asyncio.shield(entry.building)
        return entry.model

    async def _build(self, workspace: str, entry: _Entry) -> None:
        generation = entry.generation
        self.builds[workspace] = self.builds.get(workspace, 0) + 1
        started = time.perf_counter()
        # Read before the data: a change during the load shows up as a new fingerprint.
        fingerprint = await self.fingerprint(workspace)
        model = await self.build(workspace)
        entry.model, entry.fingerprint = model, fingerprint
        entry.built_generation, entry.checked_at = generation, time.monotonic()
        log.info(
            "workspace_built",
            workspace=workspace,
            history=model.history_size,
            measured=model.hours.samples,
            seconds=round(time.perf_counter() - started, 3),
        )
