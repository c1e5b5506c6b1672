"""Which event ids are being written, so two batches sharing one are written in turn.

The tracker writes up to two batches of run events at once (one commits while the next is
copied). After its COPY a batch checks that none of its ids is stored under another
timestamp (`TrackerRepo.copy_many`), but that check sees only committed rows: two batches
carrying the same id, both between their COPY and their commit, would each find it
unstored and both be kept. A batch therefore starts writing only when no batch being
written holds any of its ids; batches with nothing in common go on at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable


class WritingIds:
    """Claims on the event ids of the batches being written in this process."""

    def __init__(self) -> None:
        #: each batch being written: set when it is done, and the ids it holds
        self._writing: dict[asyncio.Event, frozenset[str]] = {}

    @contextlib.asynccontextmanager
    async def claim(self, ids: Iterable[str]) -> AsyncIterator[None]:
        """Hold ``ids`` while the block runs, first waiting for every batch that holds one.

        Released when the block ends however it ends (an error, a cancellation).
        """
        keys = frozenset(ids)
        while sharing := [d for d, held in self._writing.items() if not keys.isdisjoint(held)]:
            await sharing[0].wait()
        done = asyncio.Event()
        self._writing[done] = keys
        try:
            yield
        finally:
            del self._writing[done]
            done.set()
