"""Tracker throughput: persisted ``run.event`` messages per second against a raw baseline.

N realistic run events (worker calls with provider usage payloads, phase starts and ends,
verifications, notes; 300-800 bytes each) are published into a throwaway namespace's
stream first. Then, five times each and interleaved (which of the two goes first
alternates, so neither always finds the machine as the other left it):

* **tracker** — the tracker app runs in-process on a fresh durable consumer and the
  clock runs until all N rows are in ``run_events`` (validation, usage normalisation and
  pricing, ``run_events`` plus ``token_usage`` in one transaction, ack after commit);
* **baseline** — a pipelined raw loop: nats-py ``fetch(256)`` on a fresh durable
  consumer, ``json.loads`` (no validation), one asyncpg ``COPY`` per batch into a table
  shaped like ``run_events`` (same keys and index), then an ack per message after the
  COPY commits; the next batch is fetched and decoded while the previous COPY runs. Same
  batch size (256) and fetch timeout (0.2 s) as the tracker's consumer.

Both rates are taken the same way: a separate connection polls the row count, and the
rate is the rows committed between the first and the last poll that saw progress, so
start-up time (the app's connections and stream set-up) is not counted for either.
Medians are printed with the ratio (goal: >= 0.90) and the machine.

Run: ``uv run python benchmarks/tracker.py [--events N] [--repeats R]``. The servers come
from ``TALLY_NATS_URL`` and ``TALLY_DATABASE_URL`` (loopback defaults); the database and
streams made for the run are dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import platform
import random
import statistics
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import nats
import structlog
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy.engine import make_url

from services.tracker.app import create_app
from services.tracker.settings import TrackerSettings
from tally.events import RunEvent, new_id
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tally.subjects import RUN_EVENT, Catalog

STAGING = "bench_raw_events"
POLL_S = 0.01
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

#: (model, provider, usage payload maker) for the worker calls, one shape per provider.
CALLS: tuple[tuple[str, str, Any], ...] = (
    (
        "gpt-5",
        "openai",
        lambda r: {
            "prompt_tokens": (p := r.randint(2_000, 60_000)),
            "completion_tokens": (c := r.randint(100, 4_000)),
            "total_tokens": p + c,
            "prompt_tokens_details": {"cached_tokens": r.randint(0, p)},
            "completion_tokens_details": {"reasoning_tokens": r.randint(0, c)},
        },
    ),
    (
        "gpt-5-mini",
        "openai",
        lambda r: {
            "input_tokens": (i := r.randint(1_000, 30_000)),
            "output_tokens": (o := r.randint(50, 2_000)),
            "total_tokens": i + o,
            "input_tokens_details": {"cached_tokens": r.randint(0, i)},
            "output_tokens_details": {"reasoning_tokens": r.randint(0, o)},
        },
    ),
    (
        "claude-sonnet-4",
        "anthropic",
        lambda r: {
            "input_tokens": r.randint(10, 5_000),
            "output_tokens": r.randint(50, 4_000),
            "cache_read_input_tokens": r.randint(0, 80_000),
            "cache_creation_input_tokens": r.randint(0, 8_000),
        },
    ),
    (
        "gemini-2.5-flash",
        "google",
        lambda r: {
            "promptTokenCount": (p := r.randint(1_000, 90_000)),
            "candidatesTokenCount": (c := r.randint(50, 3_000)),
            "cachedContentTokenCount": r.randint(0, p),
            "thoughtsTokenCount": (t := r.randint(0, 1_000)),
            "totalTokenCount": p + c + t,
        },
    ),
)
PHASES = ("plan", "implement", "test", "review")
NOTES = (
    "retrying after a flaky integration test; the fixture now waits for the consumer",
    "split the migration in two so the index is built concurrently on large tables",
    "reviewer asked for a property test covering the empty window and the overflow case",
    "the worker hit the context limit; summarised the diff and continued from checkpoint",
)


def timeline(n: int, seed: int = 7) -> list[RunEvent]:
    """``n`` run events over runs of ~200 events: mostly worker calls, the rest phases,
    verifications and notes, as an agent's run produces them."""
    rnd = random.Random(seed)
    events: list[RunEvent] = []
    run_id, at, phase = "", T0, PHASES[0]
    while len(events) < n:
        if len(events) % 200 == 0:
            run_id, phase = f"run-{new_id()[:12]}", PHASES[0]
        at += timedelta(seconds=rnd.uniform(0.5, 30))
        roll = rnd.random()
        if roll < 0.55:
            model, provider, usage = rnd.choice(CALLS)
            started = at - timedelta(seconds=rnd.uniform(1, 40))
            detail: dict[str, Any] = {
                "kind": "worker_call",
                "worker": rnd.choice(("coder", "planner", "reviewer", "tester")),
                "model": model,
                "provider": provider,
                "usage": usage(rnd),
                "started_at": started.isoformat(),
                "finished_at": at.isoformat(),
                "action": rnd.choice(("edit", "read", "plan", "review")),
                "invocation_kind": rnd.choice(("chat", "tool", "stream")),
                "command": "agent run",
                "phase": phase,
            }
        elif roll < 0.75:
            phase = rnd.choice(PHASES)
            detail = {"kind": rnd.choice(("phase_start", "phase_end")), "phase": phase}
            detail["attempt"] = rnd.randint(1, 3)
        elif roll < 0.9:
            detail = {
                "kind": "verification",
                "command": rnd.choice(("pytest -q tests/unit", "ruff check .", "mypy libs")),
                "tier": rnd.choice(("fast", "full")),
                "passed": rnd.random() < 0.8,
                "duration_ms": round(rnd.uniform(200, 90_000), 1),
                "retry": rnd.randint(0, 2),
            }
        else:
            detail = {"kind": "note", "text": rnd.choice(NOTES)}
        events.append(
            RunEvent(
                run_id=run_id,
                at=at,
                detail=detail,
                source="agent-bench",
                correlation_id=f"task-{run_id[4:]}",
                workspace="bench",
            )
        )
    return events


async def publish(nc: NATS, subject: str, events: list[RunEvent]) -> float:
    """Publish with ``Nats-Msg-Id``, many acks in flight. Returns messages per second."""
    js = nc.jetstream(publish_async_max_pending=4000)
    started = time.perf_counter()
    for e in events:
        await js.publish_async(subject, e.to_json(), headers={"Nats-Msg-Id": e.event_id})
    await js.publish_async_completed()
    return len(events) / (time.perf_counter() - started)


async def persisted_rate(pg: asyncpg.Connection, table: str, n: int, timeout: float) -> float:
    """Rows per second committed into ``table`` until it holds ``n`` rows.

    Counted from the first poll that sees rows to the poll that sees all of them, so the
    consumer's start-up is not part of the figure.
    """
    deadline = time.perf_counter() + timeout
    first: tuple[float, int] | None = None
    while True:
        have = await pg.fetchval(f"SELECT count(*) FROM {table}")
        now = time.perf_counter()
        if have and first is None:
            first = (now, have)
        if have >= n:
            assert first is not None
            if now == first[0]:
                raise RuntimeError("all rows landed between two polls: raise --events")
            return (have - first[1]) / (now - first[0])
        if now > deadline:
            raise TimeoutError(f"{table} holds {have} of {n} rows after {timeout}s")
        await asyncio.sleep(POLL_S)


@dataclass
class Bench:
    settings: TallySettings
    catalog: Catalog
    nc: NATS
    pg: asyncpg.Connection
    n: int

    @property
    def stream(self) -> str:
        return self.catalog.stream_for(RUN_EVENT)

    async def tracker(self) -> float:
        """One tracker measurement on a fresh durable consumer and empty tables."""
        await self.pg.execute("TRUNCATE run_events, token_usage")
        app = create_app(
            TrackerSettings(
                nats_url=self.settings.nats_url,
                database_url=self.settings.database_url,
                namespace=self.catalog.namespace,
            )
        )
        await app.start()
        try:
            return await persisted_rate(self.pg, "run_events", self.n, timeout=600)
        finally:
            await app.stop()
            await self.nc.jetstream().delete_consumer(
                self.stream, self.catalog.durable("tracker", RUN_EVENT)
            )

    async def baseline(self) -> float:
        """One raw measurement: fetch(256) and json.loads of the next batch while the
        previous one is COPYed and then acked; no validation."""
        await self.pg.execute(f"TRUNCATE {STAGING}")
        js = self.nc.jetstream()
        durable = f"bench-raw-{new_id()[:8]}"
        sub = await js.pull_subscribe(
            self.catalog.subject(RUN_EVENT),
            durable=durable,
            stream=self.stream,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
        )
        db = await asyncpg.connect(_dsn(self.settings.database_url))

        async def write(msgs: list[Any], records: list[tuple[Any, ...]]) -> None:
            await db.copy_records_to_table(STAGING, records=records)
            for m in msgs:  # after the COPY's commit (autocommit)
                await m.ack()

        async def consume() -> None:
            seen = 0
            writing: asyncio.Task[None] | None = None
            while seen < self.n:
                try:
                    msgs = await sub.fetch(256, timeout=0.2)
                except TimeoutError:
                    continue
                records = []
                for m in msgs:
                    body = json.loads(m.data)
                    records.append(
                        (
                            body["event_id"],
                            body["run_id"],
                            body["workspace"],
                            body["detail"]["kind"],
                            datetime.fromisoformat(body["at"]),
                            json.dumps(body["detail"]),
                        )
                    )
                if writing is not None:
                    await writing
                writing = asyncio.create_task(write(msgs, records))
                seen += len(msgs)
            if writing is not None:
                await writing

        task = asyncio.create_task(consume())
        try:
            return await persisted_rate(self.pg, STAGING, self.n, timeout=600)
        finally:
            await task
            await sub.unsubscribe()
            await js.delete_consumer(self.stream, durable)
            await db.close()


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def machine(server_version: str, nats_version: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout
    return [
        ("nproc", nproc.strip()),
        ("CPU", cpu),
        ("Python", platform.python_version()),
        ("PostgreSQL", server_version),
        ("NATS server", nats_version),
    ]


async def main(n: int, repeats: int) -> None:
    logging.disable(logging.WARNING)  # the app's info logs would cost time in the loop
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    exits = contextlib.AsyncExitStack()
    settings = await exits.enter_async_context(sandbox(TallySettings(), prefix="bench"))
    catalog = Catalog(settings.namespace)
    nc = await nats.connect(settings.nats_url)
    pg = await asyncpg.connect(_dsn(settings.database_url))
    try:
        await pg.execute(f"CREATE TABLE {STAGING} (LIKE run_events INCLUDING ALL)")
        events = timeline(n)
        sizes = sorted(len(e.to_json()) for e in events)
        pub_rate = await publish(nc, catalog.subject(RUN_EVENT), events)
        print(
            f"published {n} run events ({sizes[0]}-{sizes[-1]} bytes, median "
            f"{sizes[len(sizes) // 2]}) at {pub_rate:,.0f} msg/s"
        )
        bench = Bench(settings, catalog, nc, pg, n)
        tracker: list[float] = []
        baseline: list[float] = []
        for i in range(repeats):
            if i % 2:
                baseline.append(await bench.baseline())
                tracker.append(await bench.tracker())
            else:
                tracker.append(await bench.tracker())
                baseline.append(await bench.baseline())
            print(f"  run {i + 1}: tracker {tracker[-1]:,.0f}/s, baseline {baseline[-1]:,.0f}/s")
        t, b = statistics.median(tracker), statistics.median(baseline)
        pg_version = await pg.fetchval("SHOW server_version")
        v = nc.connected_server_version
        nats_version = f"{v.major}.{v.minor}.{v.patch}"
    finally:
        await pg.close()
        await nc.close()
        await exits.aclose()
    print()
    rows = [
        ("tracker (validate, price, 2 tables, ack after commit)", f"{t:,.0f}"),
        ("baseline (pipelined: fetch 256 + json.loads during COPY)", f"{b:,.0f}"),
        ("ratio (goal >= 0.90)", f"{t / b:.2f}"),
    ]
    print(f"| {'path':<56} | {'events/s':>8} |")
    print(f"|{'-' * 58}|{'-' * 10}|")
    for name, value in rows:
        print(f"| {name:<56} | {value:>8} |")
    print(f"medians of {repeats} runs of {n} events")
    print()
    for name, value in machine(pg_version, nats_version):
        print(f"{name + ':':<13} {value}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="run events to publish")
    parser.add_argument("--repeats", type=int, default=5, help="measurements of each path")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.repeats))
