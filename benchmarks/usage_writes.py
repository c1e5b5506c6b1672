"""What the daily token rollup's triggers cost the tracker's writes.

A fresh migrated database gets 2,000 runs (40 agents, each with a stored assignment).
Then, interleaved and alternating which goes first, rounds of ``--writers`` concurrent
connections each COPY ``--batches`` batches of 256 worker calls (of ``--runs-per-batch``
random runs, all in the last two days: every writer updates the same few daily rows at
once, the worst case for row locks), each batch in its own transaction as the tracker
writes them:

* **with** the daily rollup's triggers on ``token_usage`` (``0015_usage_daily``);
* **without** them (disabled for the round; the hourly rollup's triggers stay on).

Rows per second of each round; medians and their ratio are printed with the load average.

Run: ``uv run python -m benchmarks.usage_writes [--writers 4] [--batches 40] [--rounds 5]``.
The server comes from ``TALLY_DATABASE_URL``; the database made for the run is dropped.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

from tally.db.migrate import drop_database, migrate
from tally.db.partitions import asyncpg_dsn
from tally.events import new_id

BATCH = 256
RUNS = 2_000
COLUMNS = (
    "event_id",
    "run_id",
    "workspace",
    "model",
    "provider",
    "command",
    "input_tokens",
    "output_tokens",
    "cost_micros",
    "cost_known",
    "duration_ms",
    "at",
)
DAILY = ("token_usage_daily_insert",)


def batch(rnd: random.Random, now: datetime, spread: int) -> list[tuple[Any, ...]]:
    out = []
    runs = [rnd.randrange(RUNS) for _ in range(spread)]
    for _ in range(BATCH):
        i = rnd.choice(runs)
        out.append(
            (
                new_id(),
                f"run-{i}",
                f"ws-{i % 4}",
                rnd.choice(["m-a", "m-b", "m-c"]),
                "p",
                None,
                rnd.randrange(20_000),
                rnd.randrange(3_000),
                rnd.randrange(90_000),
                True,
                900.0,
                now - timedelta(seconds=rnd.uniform(0, 2 * 86400)),
            )
        )
    return out


async def round_rate(
    pool: asyncpg.Pool, writers: int, batches: int, spread: int, seed: int
) -> float:
    now = datetime.now(UTC)
    work = [[batch(random.Random(seed * 100 + w * 10_000 + b), now, spread)
             for b in range(batches)] for w in range(writers)]  # fmt: skip

    async def write(rows: list[list[tuple[Any, ...]]]) -> None:
        async with pool.acquire() as conn:
            for records in rows:
                async with conn.transaction():
                    await conn.copy_records_to_table(
                        "token_usage", records=records, columns=COLUMNS
                    )

    started = time.perf_counter()
    await asyncio.gather(*(write(w) for w in work))
    return writers * batches * BATCH / (time.perf_counter() - started)


async def set_daily(pool: asyncpg.Pool, on: bool) -> None:
    verb = "ENABLE" if on else "DISABLE"
    for name in DAILY:
        await pool.execute(f"ALTER TABLE token_usage {verb} TRIGGER {name}")


async def main(writers: int, batches: int, rounds: int, spread: int) -> None:
    base = os.environ.get(
        "TALLY_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/tally"
    )
    url = make_url(base).set(database=f"tally_usage_writes_{new_id()[:8]}")
    url_s = url.render_as_string(hide_password=False)
    await migrate(url_s)
    try:
        pool = await asyncpg.create_pool(asyncpg_dsn(url_s), min_size=writers, max_size=writers)
        await pool.executemany(
            "INSERT INTO assignments (assignment_id, task_id, workspace, model, subscription, "
            "strategy, reservation_id, detail) VALUES ($1, $2, $3, 'm-a', $4, 's', $1, '{}')",
            [(f"a-{i}", f"task-{i}", f"ws-{i % 4}", f"sub-{i % 3}") for i in range(RUNS)],
        )
        await pool.executemany(
            "INSERT INTO runs (run_id, workspace, task_id, agent_id, assignment_id, command) "
            "VALUES ($1, $2, $3, $4, $5, 'implement')",
            [(f"run-{i}", f"ws-{i % 4}", f"task-{i}", f"agent-{i % 40}", f"a-{i}")
             for i in range(RUNS)],
        )  # fmt: skip
        rates: dict[bool, list[float]] = {True: [], False: []}
        await round_rate(pool, writers, 4, spread, seed=0)  # warm-up
        for r in range(rounds):
            for on in (True, False) if r % 2 == 0 else (False, True):
                await set_daily(pool, on)
                rates[on].append(await round_rate(pool, writers, batches, spread, seed=r * 2 + on))
        await set_daily(pool, True)
        await pool.close()
    finally:
        await drop_database(url_s)
    with_, without = statistics.median(rates[True]), statistics.median(rates[False])
    print(
        f"load average {os.getloadavg()[0]:.2f}; {writers} writers x {batches} batches "
        f"x {BATCH} calls of {spread} runs"
    )
    print(f"  with the daily rollup    {with_:9,.0f} rows/s  {[round(x) for x in rates[True]]}")
    print(f"  without it               {without:9,.0f} rows/s  {[round(x) for x in rates[False]]}")
    print(f"  ratio                    {with_ / without:.2f}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=4)
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--runs-per-batch",
        type=int,
        default=32,
        help="Runs a batch's calls belong to (agents working at once); 256: every call "
        "of another run, the worst case.",
    )
    a = p.parse_args()
    asyncio.run(main(a.writers, a.batches, a.rounds, a.runs_per_batch))
