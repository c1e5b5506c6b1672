"""Each workspace's models, built once per change of its history and kept warm.

One build per workspace at a time (single-flight): every estimate that arrives while a
workspace is being built waits for that build instead of starting its own. The CPU part of
a build runs in a worker thread, so the event loop keeps answering other workspaces. A
built model is kept until its history changes, never by a timer:

* a history import invalidates it *hard*: the next estimate waits for the rebuild, so an
  import is reflected at once — on this process directly, on other replicas through a
  cheap fingerprint query (at most every ``check_interval_s``);
* newly measured runs and finished tasks (the learner's calibration, or the fingerprint)
  invalidate it *soft*: the warm model keeps answering while the rebuild runs in the
  background, so a steady flow of runs never stalls estimates.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field

import structlog

from services.estimator.workspace import WorkspaceModel

log = structlog.get_logger(__name__)

#: Reads a workspace's fingerprint: (what changes with imported history, what changes with
#: measured runs and finished tasks).
Fingerprint = Callable[[str], Awaitable[tuple[Hashable, Hashable]]]
#: Loads a workspace's history and builds its model (the CPU part off the event loop).
Build = Callable[[str], Awaitable[WorkspaceModel]]


@dataclass
class _Entry:
    model: WorkspaceModel | None = None
    fingerprint: tuple[Hashable, Hashable] | None = None
    checked_at: float = 0.0
    #: Bumped by every change of history; a build records the one it started from.
    generation: int = 0
    #: The generation an answer must reflect (raised by hard invalidations).
    required: int = 0
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

    def invalidate(self, workspace: str, *, wait: bool = True) -> None:
        """Mark a workspace's history changed.

        Args:
            wait: The next estimate waits for the rebuild (an import); otherwise the warm
                model keeps answering while it is rebuilt in the background.
        """
        entry = self._entries.setdefault(workspace, _Entry())
        entry.generation += 1
        if wait:
            entry.required = entry.generation
        elif entry.model is not None:
            self._start(workspace, entry)

    async def get(self, workspace: str) -> WorkspaceModel:
        """The workspace's current model, building it (once) when missing or out of date."""
        entry = self._entries.setdefault(workspace, _Entry())
        if entry.model is not None and entry.built_generation >= entry.required:
            now = time.monotonic()
            if now - entry.checked_at >= self.check_interval_s:
                entry.checked_at = now
                imported, measured = await self.fingerprint(workspace)
                if entry.fingerprint is None or imported != entry.fingerprint[0]:
                    entry.generation += 1
                    entry.required = entry.generation
                elif measured != entry.fingerprint[1]:
                    entry.generation += 1
            if entry.built_generation >= entry.required:
                if entry.built_generation != entry.generation:
                    self._start(workspace, entry)
                return entry.model
        while entry.model is None or entry.built_generation < entry.required:
            # Shielded: a caller that times out does not cancel the build others wait for.
            await asyncio.shield(self._start(workspace, entry))
        return entry.model

    def _start(self, workspace: str, entry: _Entry) -> asyncio.Task[None]:
        """The workspace's build in flight, starting one if none is."""
        if entry.building is None or entry.building.done():
            entry.building = asyncio.create_task(self._build(workspace, entry))
            entry.building.add_done_callback(_log_failure)
        return entry.building

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


def _log_failure(task: asyncio.Task[None]) -> None:
    """A failed build is logged (a background one has no caller to raise to)."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("workspace_build_failed", error=repr(exc))
