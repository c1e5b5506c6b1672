"""The quota service under concurrent requests, and its responders' concurrency.

Against real NATS, Postgres and Redis: a thousand reservations in flight at once never
pass a hard limit and each accepted one is in the ledger; a clock at a window boundary
puts reservations in the windows they were made in; a responder answers many requests at
once, still dead-letters bad ones, and finishes what it answers when the broker stops.
"""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.errors
import pytest
import yaml
from faststream.nats import NatsBroker
from sqlalchemy import select

from services.quota.app import create_app
from services.quota.settings import QuotaSettings
from tally.bus import Bus
from tally.db.tables import quota_ledger
from tally.errors import PermanentError, StepTimeout, TransientError
from tally.events import (
    ReleaseReply,
    ReleaseRequest,
    ReserveReply,
    ReserveRequest,
    UsageReply,
    UsageRequest,
    new_id,
)

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def write_subscription(tmp_path: Path, name: str, limits: dict[str, Any]) -> Path:
    path = tmp_path / "subscriptions.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "subscriptions": [
                    {"name": name, "kind": "payg", "enforcement": "hard", "limits": limits}
                ]
            }
        )
    )
    return path


async def reserve(
    h: Harness, subscription: str, tokens: int, reservation_id: str, timeout: float = 5.0
) -> ReserveReply:
    return await h.client.request(
        ReserveRequest(
            subscription=subscription,
            tokens=tokens,
            cost_usd=0.0,
            reservation_id=reservation_id,
        ),
        ReserveReply,
        step="quota",
        timeout=timeout,
    )


async def ledger_rows(h: Harness, prefix: str) -> list[Any]:
    return await h.rows(
        select(quota_ledger).where(quota_ledger.c.reservation_id.startswith(prefix))
    )


async def test_a_thousand_concurrent_reservations_never_pass_a_hard_limit(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    limit = 5_000
    name = f"burst-{new_id()[:8]}"
    await h.start(
        "quota", subscriptions_path=write_subscription(tmp_path, name, {"day": {"tokens": limit}})
    )
    rng = random.Random(7)
    sizes = [rng.randint(1, 50) for _ in range(1_000)]  # ~25k tokens asked
    prefix = f"burst-{new_id()[:8]}-"

    replies = await asyncio.gather(
        *(reserve(h, name, t, f"{prefix}{i}", timeout=60.0) for i, t in enumerate(sizes))
    )

    accepted = {r.reservation_id: t for r, t in zip(replies, sizes, strict=True) if r.ok}
    total = sum(accepted.values())
    assert total <= limit
    # Each refusal was needed: totals only grew, so whatever was refused still does not fit.
    refused = [t for r, t in zip(replies, sizes, strict=True) if not r.ok]
    assert refused and all(total + t > limit for t in refused)
    assert all("over_limit" in r.reason for r in replies if not r.ok)
    # A reply "ok" means ledgered too: the rows are there once the replies are.
    rows = await ledger_rows(h, prefix)
    assert {r.reservation_id: r.tokens for r in rows if r.op == "reserve"} == accepted
    usage = await h.client.request(UsageRequest(), UsageReply, step="quota")
    day = next(s["day"] for s in usage.subscriptions if s["subscription"] == name)
    assert (day["reserved_tokens"], day["used_tokens"]) == (total, 0)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_reservation_at_midnight_belongs_to_the_window_it_was_made_in(
    harness: Harness, tmp_path: Path
) -> None:
    h = harness
    name = f"edge-{new_id()[:8]}"  # its own name: its rows are dated years ahead
    path = write_subscription(tmp_path, name, {"day": {"tokens": 100}, "month": {"tokens": 150}})
    # The last millisecond of a month: day and month both roll over at the next one.
    clock = Clock(datetime(2031, 1, 31, 23, 59, 59, 999_000, tzinfo=UTC))
    settings = QuotaSettings(
        nats_url=h.settings.nats_url,
        database_url=h.settings.database_url,
        redis_url=h.settings.redis_url,
        namespace=h.settings.namespace,
        subscriptions_path=path,
    )
    app = create_app(settings, clock=clock)
    await app.start()
    h.apps.append(app)
    prefix = f"edge-{new_id()[:8]}-"

    before = await reserve(h, name, 100, f"{prefix}before")
    assert before.ok
    full = await reserve(h, name, 1, f"{prefix}full")
    assert not full.ok and "over_limit" in full.reason
    assert full.retry_after == datetime(2031, 2, 1, tzinfo=UTC)

    clock.now += timedelta(milliseconds=1)
    after = await reserve(h, name, 100, f"{prefix}after")
    assert after.ok  # a new day and a new month: nothing reserved in them yet
    released = await h.client.request(
        ReleaseRequest(reservation_id=before.reservation_id), ReleaseReply, step="quota"
    )
    assert released.status == "released"

    # Giving back January's reservation leaves February's window as it was.
    usage = await h.client.request(UsageRequest(), UsageReply, step="quota")
    sub = next(s for s in usage.subscriptions if s["subscription"] == name)
    assert (sub["day"]["window"], sub["day"]["reserved_tokens"]) == ("d:2031-02-01", 100)
    assert (sub["month"]["window"], sub["month"]["reserved_tokens"]) == ("m:2031-02", 100)
    rows = {(r.op, r.reservation_id): (r.day, r.month) for r in await ledger_rows(h, prefix)}
    assert rows == {
        ("reserve", f"{prefix}before"): ("2031-01-31", "2031-01"),
        ("reserve", f"{prefix}after"): ("2031-02-01", "2031-02"),
        ("release", f"{prefix}before"): ("2031-02-01", "2031-02"),
    }


@pytest.fixture
async def probe(harness: Harness) -> Any:
    """A bare bus on the test's namespace, for responders of the test's own."""
    broker = NatsBroker(harness.settings.nats_url, logger=None, graceful_timeout=10.0)
    bus = Bus(broker, harness.catalog, "probe")
    yield broker, bus
    await broker.stop()


async def test_a_responder_answers_up_to_its_concurrency_at_once(
    harness: Harness, probe: Any
) -> None:
    broker, bus = probe
    inside = 0
    all_in = asyncio.Event()

    @bus.responder(UsageRequest, concurrency=8)
    async def answer(r: UsageRequest) -> UsageReply:
        nonlocal inside
        inside += 1
        if inside == 8:
            all_in.set()
        # Nobody is answered until all eight are being handled together.
        await asyncio.wait_for(all_in.wait(), 20.0)
        return UsageReply(subscriptions=[{"n": inside}])

    await broker.start()
    await broker.connection.flush()  # the server knows the subscription before we ask

    async def ask() -> UsageReply:
        # "No responders" means the request reached no handler, so asking again is safe;
        # the server has been seen to answer it right after the subscription's flush.
        deadline = asyncio.get_running_loop().time() + 20.0
        while True:
            try:
                return await harness.client.request(
                    UsageRequest(), UsageReply, step="probe", timeout=20.0
                )
            except StepTimeout as exc:
                no_responders = isinstance(exc.__cause__, nats.errors.NoRespondersError)
                if not no_responders or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    # Bounded generously: on a loaded machine eight requests can take seconds to arrive.
    replies = await asyncio.gather(*(ask() for _ in range(8)))
    assert [r.subscriptions for r in replies] == [[{"n": 8}]] * 8


async def test_a_responder_dead_letters_bad_requests_and_finishes_before_stopping(
    harness: Harness, probe: Any
) -> None:
    broker, bus = probe
    entered, release = asyncio.Event(), asyncio.Event()

    @bus.responder(UsageRequest, concurrency=4)
    async def answer(r: UsageRequest) -> UsageReply:
        entered.set()
        await release.wait()
        return UsageReply(subscriptions=[])

    await broker.start()
    await broker.connection.flush()  # the server knows the subscription before we ask
    subject = harness.catalog.subject(UsageRequest.subject)
    async with harness.dead_letters("probe") as letters:
        bad = await harness.client.nc.request(
            subject, b"not json: an unreadable request", timeout=5.0
        )
        assert set(json.loads(bad.data)) == {"error"}
        letter = await harness.next_item(letters, what="dead letter")
    assert letter.subject == UsageRequest.subject and "not" in letter.payload

    pending = asyncio.create_task(
        harness.client.request(UsageRequest(), UsageReply, step="probe", timeout=10.0)
    )
    await asyncio.wait_for(entered.wait(), 5.0)
    stopping = asyncio.create_task(broker.stop())
    await asyncio.sleep(0.2)
    assert not stopping.done()  # waiting for the request being answered
    release.set()
    assert (await pending).subscriptions == []
    await asyncio.wait_for(stopping, 10.0)


async def test_a_responder_that_fails_answers_at_once_saying_whether_to_retry(
    harness: Harness, probe: Any
) -> None:
    """A failing handler answers with its error instead of leaving the requester to time
    out: a server it could not reach (or a TransientError) is worth asking again, a bug is
    not (and is dead-lettered with its reason)."""
    broker, bus = probe
    failures: list[BaseException] = [
        ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)"),
        TransientError("ledger write failed: OperationalError"),
        KeyError("day"),
    ]

    @bus.responder(UsageRequest, concurrency=1)
    async def answer(r: UsageRequest) -> UsageReply:
        raise failures.pop(0)

    await broker.start()
    await broker.connection.flush()

    async def ask() -> UsageReply:
        return await harness.client.request(UsageRequest(), UsageReply, step="probe", timeout=10)

    with pytest.raises(TransientError, match=r"probe: .*Connect call failed"):
        await ask()
    with pytest.raises(TransientError, match="probe: ledger write failed"):
        await ask()
    async with harness.dead_letters("probe") as letters:
        with pytest.raises(PermanentError, match=r"probe: .*KeyError"):
            await ask()
        letter = await harness.next_item(letters, what="the failed request's dead letter")
    assert letter.subject == UsageRequest.subject and "KeyError" in letter.error
