"""Scale: one replica of each service against two, and the reporter at 100k and 10M events.

Three measurements, each on a throwaway namespace and database, the services run as their
own processes (``tally serve``), as in production:

1. **Chain**: ``task.created`` → ``task.assigned`` sustained throughput: N tasks published
   at once, the clock stops when the N-th distinct assignment arrives; estimator, assigner
   and quota with 1 and then 2 processes each.
2. **Tracker**: run events stored per second: E ``run.event`` messages published at once,
   the clock stops when Postgres holds all of them; 1 and then 2 tracker processes.
3. **Reporter**: p50/p95 of ``GET /runs/{id}`` (a run's timeline, from the partitioned
   ``run_events``) with 100 thousand events stored, then with ``--events`` (10 million).

Ratios are printed beside the figures (the machine is shared: compare within one run).

Run: ``uv run python benchmarks/scale.py [--tasks N] [--run-events E] [--events 10000000]``
(``make bench-scale``). Servers from ``TALLY_NATS_URL``, ``TALLY_DATABASE_URL``,
``TALLY_REDIS_URL``; everything made for the run is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import asyncpg
import httpx
import numpy as np
import yaml

from tally.client import TallyClient
from tally.db.partitions import asyncpg_dsn
from tally.events import RunEvent, TaskAssigned, TaskCreated, new_id
from tally.sandbox import sandbox
from tally.settings import CONFIG_DIR, TallySettings

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "tly_bench-" + os.urandom(8).hex()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unlimited_subscriptions(workdir: Path) -> Path:
    """The shipped subscriptions without limits: the benchmark measures flow, not refusals."""
    shipped = yaml.safe_load((CONFIG_DIR / "subscriptions.yaml").read_text())
    for sub in shipped["subscriptions"]:
        sub["limits"] = {}
    path = workdir / "subscriptions.yaml"
    path.write_text(yaml.safe_dump(shipped))
    return path


def spawn(name: str, port: int, env: dict[str, str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """``tally serve NAME`` on ``port`` (not waited for)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tally.cli.main", "serve", name, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def processes(
    s: TallySettings, services: dict[str, int], workdir: Path
) -> AsyncIterator[dict[str, list[int]]]:
    """``services[name]`` processes of each service; yields their HTTP ports."""
    env = {
        **os.environ,
        "TALLY_LOG_LEVEL": "WARNING",
        "TALLY_NATS_URL": s.nats_url,
        "TALLY_DATABASE_URL": s.database_url,
        "TALLY_REDIS_URL": s.redis_url,
        "TALLY_NAMESPACE": s.namespace,
        "TALLY_QUOTA_SUBSCRIPTIONS_PATH": str(unlimited_subscriptions(workdir)),
        "TALLY_REPORTER_BOOTSTRAP_TOKEN": TOKEN,
        "TALLY_REPORTER_RATE_LIMIT_BURST": "1000000",
    }
    procs: list[subprocess.Popen[bytes]] = []
    ports: dict[str, list[int]] = {}
    log = (workdir / "services.log").open("ab")
    try:
        for name, count in services.items():
            for _ in range(count):
                port = free_port()
                ports.setdefault(name, []).append(port)
                procs.append(spawn(name, port, env, log))
        async with httpx.AsyncClient(timeout=3.0) as http:
            for port in (p for group in ports.values() for p in group):
                deadline = time.monotonic() + 120
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"a service on :{port} never became healthy")
                    await asyncio.sleep(0.25)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


async def chain(base: TallySettings, replicas: int, tasks: int, workdir: Path) -> float:
    """Tasks assigned per second, ``task.created`` to ``task.assigned``."""
    async with sandbox(base, prefix="bs") as s:
        services = {"quota": replicas, "estimator": replicas, "assigner": replicas}
        async with (
            processes(s, services, workdir),
            TallyClient.connect(s.nats_url, namespace=s.namespace, source="bench") as client,
            client.watch(TaskAssigned, lambda e: True) as assigned,
        ):
            created = [
                TaskCreated(
                    workspace="bench",
                    task_id=f"T-{i}-{new_id()[:6]}",
                    title=f"Fix the flaky {('login', 'export', 'billing')[i % 3]} test {i}",
                    description="- reproduce\n- fix",
                )
                for i in range(tasks)
            ]
            start = time.perf_counter()
            for i in range(0, tasks, 200):
                await asyncio.gather(*(client.publish(t) for t in created[i : i + 200]))
            seen: set[str] = set()
            while len(seen) < tasks:
                seen.add((await asyncio.wait_for(assigned.get(), 300)).task_id)
            return tasks / (time.perf_counter() - start)


async def tracker(base: TallySettings, replicas: int, events: int, workdir: Path) -> float:
    """Run events stored per second."""
    async with (
        sandbox(base, prefix="bt") as s,
        processes(s, {"tracker": replicas}, workdir),
        TallyClient.connect(s.nats_url, namespace=s.namespace, source="bench") as client,
    ):
        now = datetime.now(UTC)
        batch = [
            RunEvent(
                workspace="bench",
                run_id=f"run-{i // 100}",
                at=now + timedelta(milliseconds=i),
                detail={"kind": "note", "text": f"step {i}"},  # type: ignore[arg-type]
            )
            for i in range(events)
        ]
        conn = await asyncpg.connect(asyncpg_dsn(s.database_url))
        try:
            start = time.perf_counter()
            for i in range(0, events, 500):
                await asyncio.gather(*(client.publish(e) for e in batch[i : i + 500]))
            while True:
                if await conn.fetchval("SELECT count(*) FROM run_events") >= events:
                    break
                await asyncio.sleep(0.1)
            return events / (time.perf_counter() - start)
        finally:
            await conn.close()


async def fill(conn: asyncpg.Connection, first_run: int, runs: int, per_run: int) -> None:
    """``runs`` runs of ``per_run`` events each, straight into Postgres (one statement)."""
    await conn.execute(
        """
        INSERT INTO runs (run_id, task_id, workspace, model, started_at)
        SELECT 'run-' || r, 'T-' || r, 'bench', 'm', now() - interval '1 hour'
        FROM generate_series($1::bigint, $2::bigint) AS r
        """,
        first_run,
        first_run + runs - 1,
    )
    await conn.execute(
        """
        INSERT INTO run_events (event_id, run_id, workspace, kind, at, detail)
        SELECT 'e-' || r || '-' || i, 'run-' || r, 'bench', 'note',
               date_trunc('month', now()) + (r * 60 + i) * interval '10 millisecond',
               jsonb_build_object('kind', 'note', 'text', 'step ' || i)
        FROM generate_series($1::bigint, $2::bigint) AS r, generate_series(1, $3) AS i
        """,
        first_run,
        first_run + runs - 1,
        per_run,
    )
    await conn.execute("ANALYZE run_events")


async def timeline_ms(port: int, runs: int, samples: int) -> tuple[float, float]:
    """p50 and p95 of ``GET /runs/{id}`` over random runs."""
    rng = random.Random(5)
    ms = []
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    ) as http:
        for _ in range(samples):
            start = time.perf_counter()
            got = await http.get(f"/runs/run-{rng.randrange(runs)}")
            ms.append((time.perf_counter() - start) * 1000)
            if got.status_code != 200:
                raise RuntimeError(f"GET /runs answered {got.status_code}: {got.text[:200]}")
    p50, p95 = np.percentile(ms, [50, 95])
    return float(p50), float(p95)


async def reporter(
    base: TallySettings, events: int, workdir: Path
) -> list[tuple[int, float, float]]:
    """Timeline latency with 100k events, then with ``events``."""
    per_run = 100
    out = []
    async with sandbox(base, prefix="br") as s:
        conn = await asyncpg.connect(asyncpg_dsn(s.database_url))
        try:
            async with processes(s, {"reporter": 1}, workdir) as ports:
                stored = 0
                for target in (100_000, events):
                    runs = (target - stored) // per_run
                    await fill(conn, stored // per_run, runs, per_run)
                    stored = target
                    p50, p95 = await timeline_ms(ports["reporter"][0], stored // per_run, 300)
                    out.append((stored, p50, p95))
        finally:
            await conn.close()
    return out


async def main(args: argparse.Namespace) -> None:
    base = TallySettings()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        rates = {r: await chain(base, r, args.tasks, workdir) for r in (1, 2)}
        print(f"chain task.created -> task.assigned, {args.tasks} tasks:")
        for r, rate in rates.items():
            print(f"  {r} replica(s) of estimator, assigner, quota: {rate:,.0f} tasks/s "
                  f"({rate / rates[1]:.2f}x)")  # fmt: skip
        stored = {r: await tracker(base, r, args.run_events, workdir) for r in (1, 2)}
        print(f"tracker, {args.run_events} run events:")
        for r, rate in stored.items():
            print(f"  {r} tracker replica(s): {rate:,.0f} events/s ({rate / stored[1]:.2f}x)")
        rows = await reporter(base, args.events, workdir)
        print("reporter GET /runs/{id} (timeline):")
        for n, p50, p95 in rows:
            print(f"  {n:>12,} run_events: p50 {p50:.1f} ms, p95 {p95:.1f} ms "
                  f"({p95 / rows[0][2]:.2f}x the p95 at {rows[0][0]:,})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--run-events", type=int, default=30_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    asyncio.run(main(parser.parse_args()))
