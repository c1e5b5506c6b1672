"""The fault drills behind ``make chaos``: each returns one row of the table.

Every drill runs the six services as their own processes (:class:`~tests.chaos.fleet.Fleet`)
in a namespace and database of their own, breaks something real, and then checks what a
user would check: every event stored once, every run's totals equal the drill's own sums,
the quota ledger's settlements equal the stored token use, every ``/healthz`` green.

- :func:`kill_drill` — ``kill -9`` of the tracker (twice), the learner and quota mid-stream.
- :func:`nats_outage_drill` — a private NATS stopped for minutes, then started again.
- :func:`postgres_restart_drill` — a private Postgres restarted (``-m fast``) mid-stream.
- :func:`redis_flush_drill` — a private Redis flushed, then ``tally quota rebuild``.
- :func:`fuzz_drill` — thousands of messages no service should accept.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tally.db.tables import run_events
from tally.events import UsageReply, UsageRequest
from tally.settings import TallySettings
from tests.chaos import checks, fuzz, workload
from tests.chaos.deployment import Deployment, Row, deploy
from tests.chaos.fleet import PrivateNats, PrivatePostgres, PrivateRedis, eventually


async def _settle(d: Deployment, planned: list[workload.PlannedRun], timeout: float) -> None:
    """Wait (bounded) until every run's figures match; a timeout is reported by the check."""
    with contextlib.suppress(AssertionError):
        await eventually(
            lambda: checks.converged(d.engine, planned), timeout=timeout, what="totals", every=2
        )


async def _runs_row(
    name: str, d: Deployment, planned: list[workload.PlannedRun], started: float, notes: list[str]
) -> Row:
    async with d.client() as c:
        out = await checks.check(d.engine, planned, c)
    down = await d.unhealthy()
    wrong = out.wrong + len(down)
    notes = [*notes, *out.notes] + ([f"unhealthy at the end: {', '.join(down)}"] if down else [])
    return Row(
        name,
        out.published,
        out.stored,
        out.lost,
        out.duplicated,
        wrong,
        notes,
        time.monotonic() - started,
    )


async def kill_drill(
    base: TallySettings | None,
    workdir: Path,
    *,
    runs: int = 200,
    per_run: int = 100,
    kills: tuple[tuple[str, float], ...] = (
        ("tracker", 0.2),
        ("learner", 0.35),
        ("quota", 0.5),
        ("tracker", 0.65),
    ),
    settle_s: float = 240.0,
    rate: float = 300.0,
    deployment: Deployment | None = None,
) -> Row:
    """(a) Runs published while services are ``kill -9``'d mid-stream and started again.

    ``kills`` are ``(service, fraction of the events published)``; ``deployment`` runs the
    drill on services already running instead of a deployment of its own.
    """
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        d = deployment
        if d is None:
            assert base is not None
            d = await stack.enter_async_context(deploy(base, workdir))
        planned = workload.plan(runs, per_run, workspace="drill-a")
        total = runs * per_run
        notes: list[str] = []
        async with d.client() as client:
            pub = workload.Publisher(client, rate=rate)
            publishing = asyncio.create_task(pub.publish(planned))

            async def chaos(d: Deployment = d) -> None:
                for service, at in kills:
                    await pub.reached(at * total)
                    pid = d.fleet.kill(service)
                    notes.append(f"kill -9 {service} (pid {pid}) after {pub.events:,} events")
                    await asyncio.sleep(1.0)
                    await d.fleet.restart(service)

            await asyncio.gather(publishing, chaos())
        await _settle(d, planned, settle_s)
        name = f"(a) kill -9 ({runs} runs x {per_run} events)"
        return await _runs_row(name, d, planned, started, notes)


async def nats_outage_drill(
    base: TallySettings,
    workdir: Path,
    *,
    outage_s: float = 180.0,
    runs: int = 30,
    per_run: int = 50,
) -> Row:
    """(b) A private NATS stopped for ``outage_s`` and started again; services keep running."""
    started = time.monotonic()
    server = PrivateNats(workdir)
    await server.start()
    try:
        async with deploy(base, workdir, nats_url=server.url) as d:
            before = workload.plan(runs, per_run, workspace="drill-b", seed=1)
            after = workload.plan(runs, per_run, workspace="drill-b", seed=2)
            pids = {n: p.pid for n, p in d.fleet.procs.items()}
            async with d.client() as client:
                await workload.Publisher(client).publish(before)
            server.stop()  # while the services are still working on what came before
            await asyncio.sleep(min(20.0, outage_s / 2))
            during = await d.unhealthy()
            await asyncio.sleep(max(0.0, outage_s - min(20.0, outage_s / 2)))
            await server.start()
            await d.fleet.healthy(timeout=120)
            same = {n: p.pid for n, p in d.fleet.procs.items()} == pids
            notes = [
                f"NATS down {outage_s:.0f} s; /healthz during the outage: "
                + (", ".join(during) or "all 200 (wrong: health should be red)"),
                f"after: every /healthz 200 with the same pids: {same}",
            ]
            async with d.client() as client:
                await workload.Publisher(client).publish(after)
            await _settle(d, before + after, 180)
            row = await _runs_row(
                f"(b) NATS down {outage_s / 60:.0f} min", d, before + after, started, notes
            )
            row.wrong += 0 if same and during else 1
            return row
    finally:
        server.stop()


async def postgres_restart_drill(
    base: TallySettings,
    workdir: Path,
    *,
    runs: int = 100,
    per_run: int = 100,
    at: float = 0.4,
    rate: float = 300.0,
    down_s: float = 0.0,
) -> Row:
    """(c) A private Postgres restarted (``pg_ctl restart -m fast``) while events flow."""
    started = time.monotonic()
    pg = PrivatePostgres()
    pg.start()
    try:
        async with deploy(base, workdir, pg=pg) as d:
            planned = workload.plan(runs, per_run, workspace="drill-c")
            notes: list[str] = []
            async with d.client() as client:
                pub = workload.Publisher(client, rate=rate)
                publishing = asyncio.create_task(pub.publish(planned))
                await pub.reached(at * runs * per_run)
                t = time.monotonic()
                if down_s:
                    await asyncio.to_thread(pg.stop_server)
                    await asyncio.sleep(down_s)
                    await asyncio.to_thread(pg.start)
                else:
                    await asyncio.to_thread(pg.restart)
                notes.append(
                    f"restarted after {pub.events:,} events, down {time.monotonic() - t:.1f} s"
                )
                await publishing
            if pub.errors:
                n, first = len(pub.errors), pub.errors[0]
                notes.append(f"{n} reservation replies were errors, asked again ({first})")
            await _settle(d, planned, 180)
            name = f"(c) Postgres down {down_s:.0f} s" if down_s else "(c) Postgres restart"
            return await _runs_row(name, d, planned, started, notes)
    finally:
        pg.stop()


def _counters(reply: UsageReply) -> dict[str, Any]:
    keys = ("used_tokens", "reserved_tokens", "used_usd", "reserved_usd")
    return {
        (s["subscription"], w, k): s[w][k]
        for s in reply.subscriptions
        for w in ("day", "month")
        for k in keys
    } | {(s["subscription"], "frozen", ""): s["frozen"] for s in reply.subscriptions}


async def redis_flush_drill(
    base: TallySettings, workdir: Path, *, runs: int = 20, per_run: int = 20
) -> Row:
    """(d) A private Redis flushed, then ``tally quota rebuild``: counters as before."""
    started = time.monotonic()
    server = PrivateRedis(workdir)
    await server.start()
    try:
        async with deploy(base, workdir, redis_url=server.url) as d:
            planned = workload.plan(runs, per_run, workspace="drill-d")
            async with d.client() as client:
                pub = workload.Publisher(client)
                await pub.publish(planned)
                live = workload.plan(5, 10, workspace="drill-d", seed=4)
                for run in live:  # reserved, never finished: live reservations
                    await pub.reserve(run)
                await _settle(d, planned, 120)
                d.cli("quota", "freeze", "openai-team")
                before = _counters(await client.request(UsageRequest(), UsageReply, step="quota"))
                r = aioredis.from_url(server.url)
                await r.flushall()
                await r.aclose()
                flushed = _counters(await client.request(UsageRequest(), UsageReply, step="quota"))
                d.cli("quota", "rebuild")
                after = _counters(await client.request(UsageRequest(), UsageReply, step="quota"))
            counters = {k: v for k, v in before.items() if k[1] != "frozen"}
            differ = [k for k in counters if after[k] != before[k]]
            erased = sum(1 for k in counters if flushed[k] != before[k])
            day = [before[(workload.SUBSCRIPTION, "day", k)] for k in ("used_tokens", "used_usd")]
            frozen = [k for k in before if k[1] == "frozen"]
            freeze_lost = [k[0] for k in frozen if before[k] != after[k]]
            notes = [
                f"{len(counters)} counters compared; {erased} differed right after the flush; "
                f"{len(differ)} differ after the rebuild" + (f": {differ[:4]}" if differ else ""),
                f"{len(live)} live reservations restored alongside; the drill subscription's "
                f"day before the flush: {day[0]:,} tokens, ${day[1]} used",
                "freeze: not yet ledgered (openai-team frozen before the flush, "
                "unfrozen after the rebuild)"
                if freeze_lost
                else "freeze switches restored",
            ]
            out = await checks.check(d.engine, planned)
            return Row(
                "(d) Redis flush + rebuild",
                out.published,
                out.stored,
                out.lost,
                out.duplicated,
                out.wrong + len(differ),
                notes,
                time.monotonic() - started,
            )
    finally:
        server.stop()


async def redis_outage_drill(
    base: TallySettings,
    workdir: Path,
    *,
    runs: int = 40,
    per_run: int = 50,
    at: float = 0.3,
    down_s: float = 30.0,
    rate: float = 300.0,
) -> Row:
    """(d') A private Redis (append-only file: it keeps its data) stopped for ``down_s``
    while runs are reserved and settled, then started again."""
    started = time.monotonic()
    server = PrivateRedis(workdir, durable=True)
    await server.start()
    try:
        async with deploy(base, workdir, redis_url=server.url) as d:
            planned = workload.plan(runs, per_run, workspace="drill-d2")
            notes: list[str] = []
            async with d.client() as client:
                pub = workload.Publisher(client, rate=rate)
                publishing = asyncio.create_task(pub.publish(planned))
                await pub.reached(at * runs * per_run)
                server.stop()
                notes.append(f"Redis stopped after {pub.events:,} events for {down_s:.0f} s")
                await asyncio.sleep(down_s)
                await server.start()
                await publishing
            await _settle(d, planned, 180)
            return await _runs_row(f"(d) Redis down {down_s:.0f} s", d, planned, started, notes)
    finally:
        server.stop()


async def fuzz_drill(
    base: TallySettings | None,
    workdir: Path,
    *,
    n: int = 10_000,
    two_mb: bool = True,
    big: int = 10,
    deployment: Deployment | None = None,
) -> Row:
    """(e) ``n`` fuzzed messages on every consumed subject: each dead-lettered with a reason,
    every service still healthy, nothing from them in Postgres.

    With ``two_mb`` a private NATS whose ``max_payload`` is 4 MiB carries a 2 MB body;
    ``deployment`` runs the drill on services already running instead.
    """
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        d = deployment
        if d is None:
            assert base is not None
            server = PrivateNats(workdir, max_payload=4 * 1024 * 1024) if two_mb else None
            if server:
                await server.start()
                stack.callback(server.stop)
            d = await stack.enter_async_context(
                deploy(base, workdir, nats_url=server.url if server else None)
            )
        plan = fuzz.plan(n, workspace="drill-e", two_mb=two_mb, big=big)
        letters = fuzz.Letters()
        async with d.client() as client:
            await letters.start(client)
            await fuzz.publish_originals(client, plan)
            await eventually(
                lambda: _stored(d.engine, list(plan.originals)), timeout=60, what="originals"
            )
            await fuzz.publish(client, plan)

            async def all_traced() -> bool:
                return len(fuzz.traced(plan, letters.found)[0]) == len(plan.messages)

            with contextlib.suppress(AssertionError):
                await eventually(all_traced, timeout=240, what="every dead letter", every=1)
            await letters.stop()
        ids, repeated = fuzz.traced(plan, letters.found)
        per_service = Counter(letter.service for letter in letters.found)
        kept_whole = {x.payload_sha256 for x in letters.found if x.payload_ref}
        by_service = ", ".join(f"{k} {v:,}" for k, v in sorted(per_service.items()))
        bad = await fuzz.invalid_rows(d.engine, plan)
        down = await d.unhealthy()
        published = len(plan.messages)
        notes = [
            f"{published:,} fuzzed messages on {len(fuzz.CONSUMED)} subjects; "
            f"dead-lettered with a reason: {len(ids):,} (stored column)",
            f"rows from fuzzed messages in Postgres: {bad}; unhealthy services: {down or 'none'}",
            f"{len(letters.found):,} letters ({by_service}); "
            f"{len(kept_whole)} distinct large bodies kept whole in the object store",
        ]
        return Row(
            f"(e) fuzz ({published:,} messages)",
            published,
            len(ids),
            published - len(ids),
            repeated,
            bad + len(down),
            notes,
            time.monotonic() - started,
        )


async def _stored(engine: AsyncEngine, event_ids: list[str]) -> bool:
    async with engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).select_from(run_events).where(run_events.c.event_id.in_(event_ids))
        )
    return n == len(event_ids)


#: The drills of ``make chaos`` by key: each is one or more rows of the table.
DRILLS: dict[str, list[tuple[Callable[..., Awaitable[Row]], dict[str, Any]]]] = {
    "a": [(kill_drill, {})],
    "b": [(nats_outage_drill, {})],
    # A fast restart, and an outage longer than a message's retries last.
    "c": [
        (postgres_restart_drill, {}),
        (postgres_restart_drill, {"runs": 40, "per_run": 50, "down_s": 30.0}),
    ],
    "d": [(redis_flush_drill, {}), (redis_outage_drill, {})],
    "e": [(fuzz_drill, {})],
}


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tally-chaos-"))
