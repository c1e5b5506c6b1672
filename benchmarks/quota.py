"""Quota reservations per second: through the quota service, against raw EVALSHA.

Three ways of making N reservations in the same run, interleaved ``--repeats`` times, on
one unlimited subscription (so every one is accepted and all paths do the same work in
Redis), first with ``--concurrency`` of them in flight, then one at a time (N/4 of them):

* **service** — ``quota.reserve`` request/reply over NATS to the quota service running
  in-process (validation, the Lua script, the ledger row committed in Postgres, then the
  reply);
* **many** — ``quota.reserve_many``: the same reservations ``--concurrency`` to a request,
  one request at a time (the assigner's way: one message each way, one Redis round trip
  and one ledger commit per request);
* **store** — :meth:`QuotaStore.reserve` called directly (on one server, the id's claim
  and the reservation in one script: one ``EVALSHA``);
* **evalsha** — the reserve script alone, ``EVALSHA`` with the keys and arguments the
  store would pass: the floor any path to Redis has to pay.

Medians are printed with the ratios to ``evalsha`` at the same concurrency, and the
machine.

Run: ``uv run python benchmarks/quota.py [--n N] [--concurrency C] [--repeats R]``. The
servers come from ``TALLY_NATS_URL``, ``TALLY_DATABASE_URL`` and ``TALLY_REDIS_URL``; the
database, streams and keys made for the run are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import structlog
import yaml
from sqlalchemy import func, select

from services.quota.app import create_app
from services.quota.keys import SubscriptionKeys
from services.quota.reservations import QuotaStore
from services.quota.settings import QuotaSettings
from services.quota.subscriptions import load_subscriptions
from services.quota.windows import epoch_ms, usd_to_micro, window_id
from tally.client import TallyClient
from tally.db import create_engine
from tally.db.tables import quota_ledger
from tally.events import ReserveManyReply, ReserveManyRequest, ReserveReply, ReserveRequest, utcnow
from tally.redis import connect_redis
from tally.sandbox import sandbox
from tally.settings import TallySettings

SUB = "bench"


async def rate(n: int, concurrency: int, one: Callable[[int], Awaitable[object]]) -> float:
    """Reservations per second for ``n`` calls of ``one`` with ``concurrency`` in flight."""
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            await one(i)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - started)


def raw_evalsha(store: QuotaStore, run: str) -> Callable[[int], Awaitable[object]]:
    """One reserve script call per id, with the store's own keys and arguments."""
    sub = store.subscription(SUB)
    script = store._reserve  # the registered script object: EVALSHA, EVAL on NOSCRIPT

    async def one(i: int) -> object:
        now = utcnow()
        rid = f"{run}-e{i}"
        windows = (window_id("day", now), window_id("month", now))
        keys = SubscriptionKeys(store.namespace, SUB).script_keys(
            rid, windows, sub.effective_thresholds
        )
        args = [
            rid,
            1_000,
            usd_to_micro(0.01),
            epoch_ms(now),
            epoch_ms(now) + 3_600_000,
            *windows,
            *(store.expire_at(w) for w in windows),
            "0",
            SUB,
            "",
            *store._policy(sub),
        ]
        return await script(keys=keys, args=args)

    return one


async def many_rate(client: TallyClient, n: int, size: int, run: str) -> float:
    """Reservations per second through ``quota.reserve_many``, ``size`` per request, one
    request at a time (``size`` reservations in flight, as the assigner's batches)."""
    started = time.perf_counter()
    for first in range(0, n, size):
        asks = [
            ReserveRequest(
                subscription=SUB, tokens=1_000, cost_usd=0.01, reservation_id=f"{run}-m{i}"
            )
            for i in range(first, min(n, first + size))
        ]
        reply = await client.request(
            ReserveManyRequest(reservations=asks), ReserveManyReply, step="quota", timeout=30
        )
        assert all(r.ok for r in reply.replies)
    return n / (time.perf_counter() - started)


async def main(n: int, concurrency: int, repeats: int) -> None:
    exits = contextlib.AsyncExitStack()
    base = await exits.enter_async_context(sandbox(TallySettings(), prefix="bq"))
    ns, db_url = base.namespace, base.database_url
    subs_path = Path(f"/tmp/{ns}-subscriptions.yaml")
    subs_path.write_text(  # noqa: ASYNC240 - before any work is timed
        yaml.safe_dump({"subscriptions": [{"name": SUB, "kind": "payg", "enforcement": "soft"}]})
    )
    settings = QuotaSettings(
        nats_url=base.nats_url,
        database_url=db_url,
        redis_url=base.redis_url,
        namespace=ns,
        subscriptions_path=subs_path,
        sweep_interval_s=3600,
    )
    app = create_app(settings)
    await app.start()
    redis = connect_redis(base.redis_url)
    store = QuotaStore(redis, load_subscriptions(subs_path), namespace=ns)
    concurrencies = (concurrency, 1) if concurrency > 1 else (1,)
    results = {c: {"service": [], "many": [], "store": [], "evalsha": []} for c in concurrencies}
    stopped = False
    try:
        async with TallyClient.connect(base.nats_url, namespace=ns) as client:

            async def via_service(run: str) -> Callable[[int], Awaitable[object]]:
                async def one(i: int) -> object:
                    reply = await client.request(
                        ReserveRequest(
                            subscription=SUB,
                            tokens=1_000,
                            cost_usd=0.01,
                            reservation_id=f"{run}-s{i}",
                        ),
                        ReserveReply,
                        step="quota",
                    )
                    assert reply.ok
                    return reply

                return one

            def via_store(run: str) -> Callable[[int], Awaitable[object]]:
                async def one(i: int) -> object:
                    return await store.reserve(
                        SUB, 1_000, 0.01, reservation_id=f"{run}-d{i}", ttl_s=3600
                    )

                return one

            await rate(200, concurrency, await via_service("warm"))  # connections, JIT-less
            for r in range(repeats):
                for c in concurrencies:
                    run, k = f"r{r}c{c}", n if c > 1 else max(1, n // 4)
                    results[c]["evalsha"].append(await rate(k, c, raw_evalsha(store, run)))
                    results[c]["store"].append(await rate(k, c, via_store(run)))
                    results[c]["service"].append(await rate(k, c, await via_service(run)))
                    if c > 1:
                        results[c]["many"].append(await many_rate(client, k, c, run))
        stopped = True
        await app.stop()  # flushes the ledger; every accepted reservation has its row
        engine = create_engine(db_url)
        async with engine.connect() as conn:
            ledgered = await conn.scalar(
                select(func.count()).where(quota_ledger.c.op == "reserve").select_from(quota_ledger)
            )
        await engine.dispose()
        sent = 200 + repeats * sum(n if c > 1 else max(1, n // 4) for c in concurrencies)
        sent += repeats * n if concurrency > 1 else 0  # the reserve_many path's
        # Store-path reservations are not the service's: only "-s" ids reach the ledger.
        if ledgered != sent:
            raise AssertionError(f"{ledgered} ledger rows for {sent} service reservations")
    finally:
        if not stopped:
            await app.stop()
        await redis.aclose()
        await exits.aclose()
        subs_path.unlink(missing_ok=True)  # noqa: ASYNC240

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    for c in concurrencies:
        floor = statistics.median(results[c]["evalsha"])
        k = n if c > 1 else max(1, n // 4)
        print(f"{k} reservations x {repeats} repeats, {c} in flight (medians)")
        for name, label in (
            ("evalsha", "raw EVALSHA of the reserve script"),
            ("store", "QuotaStore.reserve (claim + reserve script)"),
            ("service", "quota.reserve via the service (+ ledger row)"),
            ("many", f"quota.reserve_many, {c} a request (+ ledger rows)"),
        ):
            if not results[c][name]:
                continue
            med = statistics.median(results[c][name])
            print(f"  {label:<46} {med:9,.0f}/s  x{med / floor:.3f} of EVALSHA")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    a = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main(a.n, a.concurrency, a.repeats))
