"""The quota ledger's group commit against real Postgres.

Concurrent appends share commits, each append returns only once its row is committed,
repeats of an operation are written once, and one bad row fails only its own append.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from services.quota.ledger import QuotaLedger
from tally.db.tables import quota_ledger
from tally.events import new_id, utcnow

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def rows_of(h: Harness, prefix: str) -> list[tuple[str, str, int]]:
    rows = await h.rows(
        select(quota_ledger.c.op, quota_ledger.c.reservation_id, quota_ledger.c.tokens).where(
            quota_ledger.c.reservation_id.startswith(prefix)
        )
    )
    return sorted((r.op, r.reservation_id, r.tokens) for r in rows)


async def test_concurrent_appends_share_commits_and_each_returns_once_durable(
    harness: Harness,
) -> None:
    h = harness
    ledger = QuotaLedger(h.engine)
    prefix = f"gc-{new_id()[:8]}-"
    seen_at_return: list[bool] = []

    async def append_and_look(i: int) -> None:
        rid = f"{prefix}{i}"
        await ledger.append("reserve", rid, "team", i, 0, utcnow())
        # Read on another connection: the row is there the moment append returns.
        seen_at_return.append(
            await h.scalar(
                select(func.count())
                .where(quota_ledger.c.reservation_id == rid)
                .select_from(quota_ledger)
            )
            == 1
        )

    await asyncio.gather(*(append_and_look(i) for i in range(500)))

    assert seen_at_return == [True] * 500
    assert await rows_of(h, prefix) == sorted(("reserve", f"{prefix}{i}", i) for i in range(500))
    # Appends that arrive while a commit runs wait for the next one, together.
    assert ledger.commits < 100


async def test_a_repeated_operation_is_written_once_even_within_one_batch(
    harness: Harness,
) -> None:
    h = harness
    ledger = QuotaLedger(h.engine)
    rid = f"dup-{new_id()[:8]}"
    at = utcnow()
    await asyncio.gather(*(ledger.append("settle", rid, "team", 300, 10_000, at) for _ in range(5)))
    await ledger.append("settle", rid, "team", 300, 10_000, at)
    await ledger.append("release", rid, "team", 300, 10_000, at)
    assert await rows_of(h, rid) == [("release", rid, 300), ("settle", rid, 300)]


async def test_a_bad_row_fails_its_own_append_only(harness: Harness) -> None:
    h = harness
    ledger = QuotaLedger(h.engine)
    prefix = f"bad-{new_id()[:8]}-"
    too_long = prefix + "x" * 300  # the ledger's reservation_id column holds 256 characters

    results = await asyncio.gather(
        *(ledger.append("reserve", f"{prefix}{i}", "team", 1, 0, utcnow()) for i in range(20)),
        ledger.append("reserve", too_long, "team", 1, 0, utcnow()),
        return_exceptions=True,
    )

    assert results[:20] == [None] * 20
    assert isinstance(results[20], SQLAlchemyError)
    assert [rid for _, rid, _ in await rows_of(h, prefix)] == sorted(
        f"{prefix}{i}" for i in range(20)
    )


async def test_flush_commits_rows_whose_appenders_gave_up_waiting(harness: Harness) -> None:
    h = harness
    ledger = QuotaLedger(h.engine)
    prefix = f"cx-{new_id()[:8]}-"
    waiting = [
        asyncio.create_task(ledger.append("expire", f"{prefix}{i}", "team", 1, 0, utcnow()))
        for i in range(50)
    ]
    await asyncio.sleep(0)  # every append has queued its row
    for task in waiting:
        task.cancel()
    await ledger.flush()

    assert len(await rows_of(h, prefix)) == 50
