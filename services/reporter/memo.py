"""Answers kept for a few seconds, computed once however many clients ask at the same time.

For reports that read many rows (``/lanes``): a dashboard polled by many people costs one
computation per ``fresh_for_s``, and sixteen clients asking at once wait for the same
one. Every answer says when it was computed (its ``now``); with ``fresh_for_s`` 0 only
the concurrent askers share an answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")

#: Answers kept at most (the oldest go first).
MAX_KEPT = 256


class Recent(Generic[T]):
    """The latest answer per key while it is younger than ``fresh_for_s`` seconds."""

    def __init__(self, fresh_for_s: float) -> None:
        self.fresh_for_s = fresh_for_s
        self._kept: dict[Hashable, tuple[float, T]] = {}
        self._running: dict[Hashable, asyncio.Future[T]] = {}

    async def get(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        """The kept answer for ``key``, the one being computed, or a new one."""
        kept = self._kept.get(key)
        if kept is not None and time.monotonic() - kept[0] < self.fresh_for_s:
            return kept[1]
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(self._compute(key, compute))
            self._running[key] = running
        # A client that goes away does not cancel the others' answer.
        return await asyncio.shield(running)

    async def _compute(self, key: Hashable, compute: Callable[[], Awaitable[T]]) -> T:
        started = time.monotonic()
        try:
            answer = await compute()
        finally:
            self._running.pop(key, None)
        self._kept.pop(key, None)
        self._kept[key] = (started, answer)
        while len(self._kept) > MAX_KEPT:
            self._kept.pop(next(iter(self._kept)))
        return answer
