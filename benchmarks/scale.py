"""Scale: one replica of each service against two, and the reporter at 100k and 10M events.

Three measurements, each on a throwaway namespace and database, the services run as their
own processes (``tally serve``), as in production:

1. **Chain**: ``task.created`` → ``task.assigned`` sustained throughput: N tasks published
   at once, the clock stops when the N-th distinct assignment arrives; estimator, assigner
   and quota with 1 and then 2 processes each.
2. **Tracker**: run events stored per second: E ``run.event`` messages published at once,
   the clock stops when Postgres holds all of them; 1 and then 2 tracker processes.
3. **Reporter**: p50/p95 at concurrency 1 of every reporter read that touches the
   partitioned ``run_events`` or ``token_usage`` (``READS``; ``/healthz`` is the baseline of
   the same run) with 100 thousand run events stored, then with ``--events`` (10 million),
   COPYed in with their ``token_usage`` rows, a monthly partition for every month they
   span. ``--layout`` says how the two loads lie in time (``LAYOUTS``): ``busy`` spreads
   both over the same twelve months (at 10M a month holds 100 times the work), ``history``
   keeps the work per day of the 100k load (``HISTORY_DAYS`` days of it) and the rest is
   older history (10M: about eleven years, ~135 partitions): windowed reads then hold the
   same work at both sizes and the ratio measures volume, not the size of the answer.

Ratios are printed beside the figures (the machine is shared: compare within one run).

Run: ``uv run python -m benchmarks.scale [--tasks N] [--run-events E] [--events 10000000]
[--parts chain,tracker,reporter] [--layout busy|history]`` (``make bench-scale``). Servers
from ``TALLY_NATS_URL``, ``TALLY_DATABASE_URL``, ``TALLY_REDIS_URL``; everything made for
the run is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
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

from benchmarks.report import TOKEN as REPORT_TOKEN
from benchmarks.report import reporter as report_server
from benchmarks.report_data import EVENTS_PER_RUN, load, partitions_for
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


#: Reporter reads that touch ``run_events`` or ``token_usage`` (and /healthz, the baseline
#: of the same run: a request that only pings Postgres). ``{run}``/``{other}``: a random
#: run per request; ``{n}``: a window of its own per request, never a cached answer.
READS = {
    "healthz": "/healthz",
    "run timeline": "/runs/{run}",
    "run kpi": "/runs/{run}/kpi",
    "compare": "/compare?a={run}&b={other}",
    "runs list": "/runs?limit=50",
    "tokens 7d by model": "/tokens?since=7d",
    "tokens 30d by agent": "/tokens?since=30d&by=agent",
    "tokens 7d ws by task": "/tokens?since=7d&by=task&workspace=ws-1",
    "lanes 30d": "/lanes",
    "lanes 30d+n h, cold": "/lanes?since={n}",
    "dashboard stats 7d": "/dashboard/stats?since=7d",
    "dashboard series": "/dashboard/series",
    "export token_usage": "/export/token_usage?limit=500",
    "export token_usage ws 60d": "/export/token_usage?limit=500&workspace=ws-3&since=60d",
    "export runs 30d": "/export/runs?limit=500&since=30d",
    "models": "/models/performance",
}
#: Months the reporter's ``busy`` load spreads over (a partition each).
MONTHS = 12
#: Days the first 100k run events span in the ``history`` layout; every further 100k
#: reaches as many days further back (10M: 4,000 days).
HISTORY_DAYS = 40
#: How the reporter's loads lie in time.
LAYOUTS = ("busy", "history")
SMALL = 100_000


def load_days(layout: str, stored: int) -> float:
    """How many days back the first ``stored`` run events reach in ``layout``."""
    return MONTHS * 30 if layout == "busy" else HISTORY_DAYS * stored / SMALL


async def reads_ms(
    http: httpx.AsyncClient, path: str, run_ids: list[str], samples: int, budget_s: float
) -> tuple[float, float, int]:
    """p50, p95 and count of ``samples`` GETs of ``path`` one at a time (fewer if
    ``budget_s`` runs out); every answer must be 200."""
    rng = random.Random(5)
    asked = 0

    def url() -> str:
        nonlocal asked
        asked += 1
        return (
            path.replace("{run}", rng.choice(run_ids))
            .replace("{other}", rng.choice(run_ids))
            .replace("{n}", f"{720 + asked}h")
        )

    for _ in range(3):  # warm-up
        await http.get(url())
    ms: list[float] = []
    deadline = time.perf_counter() + budget_s
    while len(ms) < samples and time.perf_counter() < deadline:
        target = url()
        start = time.perf_counter()
        got = await http.get(target)
        ms.append((time.perf_counter() - start) * 1000)
        if got.status_code != 200:
            raise RuntimeError(f"GET {target} answered {got.status_code}: {got.text[:200]}")
    p50, p95 = np.percentile(ms, [50, 95])
    return float(p50), float(p95), len(ms)


async def reporter(
    base: TallySettings, events: int, samples: int, budget_s: float, layout: str = "busy"
) -> dict[int, dict[str, tuple[float, float, int]]]:
    """Every read at concurrency 1 with 100k run events stored, then with ``events``, laid
    out in time as ``layout`` says (tasks, runs, worker calls with their token_usage rows,
    status changes: ``report_data.py``)."""
    out: dict[int, dict[str, tuple[float, float, int]]] = {}
    now = datetime.now(UTC)
    async with sandbox(base, prefix="br", database=True) as s:
        dsn = asyncpg_dsn(s.database_url)
        await partitions_for(dsn, math.ceil(load_days(layout, events) / 30) + 1)
        run_ids: list[str] = []
        stored = 0
        for target in (SMALL, events):
            runs = (target - stored) // EVENTS_PER_RUN
            started = time.perf_counter()
            # busy: both loads over the same months; history: the second one further back
            after = 0.0 if layout == "busy" else load_days(layout, stored)
            data = await load(
                dsn,
                runs,
                now,
                days=load_days(layout, target),
                first=stored // EVENTS_PER_RUN,
                after_days=after,
            )
            run_ids += data.run_ids
            stored = target
            print(f"  loaded to {stored:,} run events in {time.perf_counter() - started:.0f} s",
                  flush=True)  # fmt: skip
            with report_server(s.database_url, free_port(), ROOT) as url:
                headers = {"Authorization": f"Bearer {REPORT_TOKEN}"}
                async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as http:
                    out[stored] = {
                        name: await reads_ms(http, path, run_ids, samples, budget_s)
                        for name, path in READS.items()
                    }
    return out


async def main(args: argparse.Namespace) -> None:
    base = TallySettings()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        if "chain" in args.parts.split(","):
            rates = {r: await chain(base, r, args.tasks, workdir) for r in (1, 2)}
            print(f"chain task.created -> task.assigned, {args.tasks} tasks:")
            for r, rate in rates.items():
                print(f"  {r} replica(s) of estimator, assigner, quota: {rate:,.0f} tasks/s "
                      f"({rate / rates[1]:.2f}x)")  # fmt: skip
        if "tracker" in args.parts.split(","):
            stored = {r: await tracker(base, r, args.run_events, workdir) for r in (1, 2)}
            print(f"tracker, {args.run_events} run events:")
            for r, rate in stored.items():
                print(f"  {r} tracker replica(s): {rate:,.0f} events/s ({rate / stored[1]:.2f}x)")
    if "reporter" in args.parts.split(","):
        load_1m = os.getloadavg()
        print(
            f"reporter, layout {args.layout}, concurrency 1 "
            f"(load average before: {load_1m[0]:.2f}):",
            flush=True,
        )
        table = await reporter(base, args.events, args.samples, args.budget, args.layout)
        small, large = table[SMALL], table[args.events]
        base_small, base_large = small["healthz"][1], large["healthz"][1]
        print(f"  {'endpoint':28} {'100k p50':>9} {'p95':>7} {'10M p50':>9} {'p95':>7}  p95 ratio")
        for name in READS:
            (a50, a95, _), (b50, b95, _) = small[name], large[name]
            print(f"  {name:28} {a50:9.1f} {a95:7.1f} {b50:9.1f} {b95:7.1f}  {b95 / a95:.2f}x")
        print(f"  (healthz p95 ratio {base_large / base_small:.2f}x; load average after: "
              f"{os.getloadavg()[0]:.2f})")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--run-events", type=int, default=30_000)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--samples", type=int, default=100, help="reporter GETs per endpoint")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds per endpoint")
    parser.add_argument(
        "--parts", default="chain,tracker,reporter", help="which measurements, comma-separated"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="busy",
        help="reporter loads: both over the same 12 months (busy), or the same work per day "
        "with 100 times the history at 10M (history)",
    )
    asyncio.run(main(parser.parse_args()))
