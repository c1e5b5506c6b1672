"""The append-only quota ledger in Postgres: every reserve, settle, release and expiry.

Redis holds the live counters; the ledger is the durable record they can be rebuilt from
(see :mod:`services.quota.rebuild`). Each row has an ``op_key`` (operation + reservation
id), so a redelivered settle is written once. Rows carry the day and month of the windows
the reservation was made in, and a reserve row its expiry, so a rebuild puts everything
back where it was.

Appends are group-committed: rows appended while commits are under way (at most
``writers`` at once) wait for one to finish, then go together in one ``INSERT`` and one
commit. :meth:`QuotaLedger.append` returns only
once its row is committed, so a caller that answers after it answers for a durable row,
and under load a thousand concurrent appends cost a handful of commits instead of a
thousand. Nothing waits on a timer: a lone append is committed at once.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.quota.rebuild import LedgerRow
from tally.db import autocommit
from tally.db.tables import quota_ledger

log = structlog.get_logger(__name__)

LEDGER = quota_ledger  #: the table this ledger appends to

#: Rows written by one INSERT at most; more waiting rows go in the next commit.
MAX_BATCH = 1_000
#: Commits under way at once: a second one starts while the first waits on its fsync,
#: so rows that arrive meanwhile do not wait for it and then for their own commit too.
WRITERS = 2

_Pending = tuple[dict[str, Any], "asyncio.Future[None]"]


class QuotaLedger:
    """Appends ledger rows in group commits and reads them back for a rebuild.

    Args:
        engine: the service's database engine.
        max_batch: rows per INSERT at most.
        writers: commits under way at once at most.
    """

    def __init__(
        self, engine: AsyncEngine, *, max_batch: int = MAX_BATCH, writers: int = WRITERS
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.writers = writers
        self._pending: list[_Pending] = []
        self._writers: set[asyncio.Task[None]] = set()
        #: Commits made so far (each writes one batch of rows).
        self.commits = 0

    async def append(
        self,
        op: str,
        reservation_id: str,
        subscription: str,
        tokens: int,
        cost_micros: int,
        at: datetime,
        *,
        windows: tuple[str, str] | None = None,
        expires_at: datetime | None = None,
        key: str | None = None,
        fallback_micros: int = 0,
    ) -> None:
        """Append one operation and return once it is committed; a repeat is ignored.

        If the caller is cancelled while waiting, the row is still written.

        Args:
            cost_micros: the amount in integer micro-dollars.
            windows: the reservation's ``(d:…, m:…)`` window ids; by default those of ``at``.
            expires_at: when a reserved amount is given back unless settled (reserve rows).
            key: the row's idempotency key; by default ``<op>:<reservation id>``.
            fallback_micros: the part of a settle's cost charged at the fallback price.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the row could not be committed.
        """
        day, month = (
            (windows[0][2:], windows[1][2:])
            if windows
            else (at.strftime("%Y-%m-%d"), at.strftime("%Y-%m"))
        )
        row = {
            "op_key": key or f"{op}:{reservation_id}",
            "reservation_id": reservation_id,
            "subscription": subscription,
            "op": op,
            "tokens": tokens,
            "cost_micros": cost_micros,
            "fallback_micros": fallback_micros,
            "day": day,
            "month": month,
            "at": at,
            "expires_at": expires_at,
        }
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if len(self._writers) < self.writers:
            writer = asyncio.create_task(self._write_pending(), name="quota-ledger")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        await done

    async def reserved(self, reservation_id: str) -> tuple[str, tuple[str, str]] | None:
        """The subscription and ``(d:…, m:…)`` windows of a reservation's reserve row."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(LEDGER.c.subscription, LEDGER.c.day, LEDGER.c.month).where(
                        LEDGER.c.op_key == f"reserve:{reservation_id}"
                    )
                )
            ).first()
        return (row.subscription, (f"d:{row.day}", f"m:{row.month}")) if row else None

    async def holds_settle(self, reservation_id: str, tokens: int, resettle_key: str) -> bool:
        """Whether the ledger already has a reservation's settle with ``tokens`` actual
        tokens, or the resettle row keyed ``resettle_key``."""
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(LEDGER.c.op, LEDGER.c.tokens).where(
                    LEDGER.c.op_key.in_((f"settle:{reservation_id}", resettle_key))
                )
            )
            return any(op == "resettle" or held == tokens for op, held in found)

    async def flush(self) -> None:
        """Wait until every row appended so far is committed (or has failed)."""
        while self._writers:
            # Writers never raise: failures go to the appenders' futures.
            await asyncio.shield(asyncio.gather(*self._writers))

    async def _write_pending(self) -> None:
        """Commit waiting rows, a batch at a time, until none are left; then stop."""
        while self._pending:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
            try:
                await self._insert([row for row, _ in batch])
            except Exception as exc:
                if len(batch) == 1:
                    _settle(batch, exc)
                    continue
                # One bad row must not fail the others: write them one by one.
                log.warning("ledger_batch_failed", rows=len(batch), error=repr(exc))
                for item in batch:
                    try:
                        await self._insert([item[0]])
                    except Exception as one:
                        _settle([item], one)
                    else:
                        _settle([item], None)
                continue
            _settle(batch, None)

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        # One round trip: asyncpg sends the rows and the commit together, and applies all
        # of them or none (no BEGIN and COMMIT of their own around it).
        async with autocommit(self.engine) as conn:
            await conn.execute(insert(LEDGER).on_conflict_do_nothing(), rows)
        self.commits += 1

    async def rows_since(self, month: str) -> list[LedgerRow]:
        """Every row whose month window is ``month`` (``YYYY-MM``) or later."""
        async with self.engine.connect() as conn:
            result = await conn.execute(select(LEDGER).where(LEDGER.c.month >= month))
            return [
                LedgerRow(
                    r.op,
                    r.reservation_id,
                    r.subscription,
                    int(r.tokens),
                    int(r.cost_micros),
                    r.day,
                    r.month,
                    r.at,
                    r.expires_at,
                )
                for r in result
            ]


def _settle(batch: list[_Pending], error: Exception | None) -> None:
    """Wake the appenders of ``batch``; one that gave up waiting is skipped."""
    for _, done in batch:
        if done.done():
            continue
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)
