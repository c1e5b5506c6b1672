"""The whole chain under load: ``task.created`` in, ``task.assigned`` out, against a raw relay.

The six services run as a user runs them, one process each (``tally serve NAME``), in a
throwaway namespace and database, with one unlimited subscription per model (quota is
reserved and ledgered for every task, never refused). ``task.created`` is published at
fixed offered rates with the envelope ``tally task create`` sends, and every
``task.assigned`` is watched for. For each rate the bench prints:

* achieved assigned/s (assignments received over the time from the first publish to the
  last assignment, the drain included);
* created→assigned latency p50/p95/p99 (from each task's publish), and for Tally its two
  stages, created→estimated and estimated→assigned (p50/p99, as ``task.estimated`` is
  seen on the bus);
* CPU per task per service: ``utime + stime`` of each process (``/proc/<pid>/stat``) over
  the phase, divided by the tasks assigned in it.

In the same run, the same figures for a raw two-hop JetStream relay (two processes, each
pulling a batch, republishing it with the publish acks collected per batch, and acking
it: ``benchmarks/chain_relay.py``): the floor any two consuming services pay.

A rate whose tasks are not all assigned within ``--drain`` seconds of its last publish
leaves a backlog; higher rates of that path are then skipped (their figures would measure
the backlog). Everything is bounded: at most ``len(rates) * (duration + drain)`` seconds a
path, plus start-up.

Run: ``uv run python benchmarks/chain.py [--rates 100,300,1000,2000] [--duration 15]
[--quick]``. The servers come from ``TALLY_NATS_URL``, ``TALLY_DATABASE_URL`` and
``TALLY_REDIS_URL``; the namespace, database and keys made for the run are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import nats
import yaml
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from tally.commands import task_created
from tally.events import new_id
from tally.sandbox import Sandbox, sandbox
from tally.settings import CONFIG_DIR, TallySettings
from tally.subjects import TASK_ASSIGNED, TASK_CREATED, TASK_DEFERRED, TASK_ESTIMATED, Catalog

ROOT = Path(__file__).resolve().parents[1]
#: The six services, one process each, in the order they are started.
SERVICES = ("tracker", "quota", "learner", "estimator", "assigner", "reporter")
TICK_S = 0.005
TITLES = (
    ("Add OAuth login", "- callback\n- refresh tokens", ("backend", "security")),
    ("Fix login redirect loop", "", ("bug",)),
    ("Write the export docs", "Document every filter and the paging.", ("docs",)),
    ("Migrate the billing tables", "- add columns\n- backfill\n- drop old ones", ("backend",)),
    ("Speed up the dashboard", "The p95 of the overview page is 2 s.", ("frontend", "perf")),
)


@dataclass
class Phase:
    """What one offered rate produced on one path."""

    rate: int
    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    #: created→estimated and estimated→assigned, seconds, per answered task (Tally only)
    stages: dict[str, list[float]] = field(default_factory=dict)
    elapsed_s: float = 0.0
    cpu_s: dict[str, float] = field(default_factory=dict)
    skipped: bool = False

    @property
    def achieved(self) -> float:
        return len(self.latencies) / self.elapsed_s if self.elapsed_s else 0.0

    def pct(self, q: float, values: list[float] | None = None) -> float:
        values = self.latencies if values is None else values
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def cpu_ms_per_task(self, name: str) -> float:
        return self.cpu_s.get(name, 0.0) * 1000 / max(1, len(self.latencies))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Watcher:
    """Publish times of ids, and the latency of each id when its answer arrives."""

    def __init__(self) -> None:
        self.sent_at: dict[str, float] = {}
        self.latencies: list[float] = []
        #: when each unanswered task's estimate was seen (Tally only)
        self.estimated_at: dict[str, float] = {}
        self.stages: dict[str, list[float]] = {"created→estimated": [], "estimated→assigned": []}
        self.last_at = 0.0
        #: answers that were a deferral, not an assignment (a refused reservation)
        self.deferred = 0
        self.reason = ""
        self._drained = asyncio.Event()

    async def drained(self, timeout: float) -> None:
        """Return once every published id is answered, or after ``timeout``."""
        if self.sent_at:
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)

    async def on_deferred(self, msg: Msg) -> None:
        self.deferred += 1
        self.reason = json.loads(msg.data).get("reason", "")
        await self.on_answer(msg)

    async def on_estimated(self, msg: Msg) -> None:
        now = time.perf_counter()
        task_id = json.loads(msg.data).get("task_id")
        sent = self.sent_at.get(task_id)
        if sent is not None:
            self.estimated_at[task_id] = now
            self.stages["created→estimated"].append(now - sent)

    async def on_answer(self, msg: Msg) -> None:
        now = time.perf_counter()
        task_id = json.loads(msg.data).get("task_id") or msg.headers.get("Nats-Msg-Id")  # type: ignore[union-attr]
        sent = self.sent_at.pop(task_id, None)
        estimated = self.estimated_at.pop(task_id, None)
        if estimated is not None:
            self.stages["estimated→assigned"].append(now - estimated)
        if sent is not None:
            self.latencies.append(now - sent)
            self.last_at = now
            if not self.sent_at:
                self._drained.set()


async def run_phase(
    rate: int,
    duration_s: float,
    drain_s: float,
    watcher: Watcher,
    publish: Callable[[int], Awaitable[str]],
    pids: dict[str, int],
) -> Phase:
    """Publish at ``rate``/s for ``duration_s``, then wait up to ``drain_s`` for answers."""
    phase = Phase(rate)
    watcher.latencies = []
    watcher.stages = {name: [] for name in watcher.stages}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    while (now := time.perf_counter()) - started < duration_s:
        due = int(rate * (now - started)) + 1
        while phase.sent < due:
            task_id = await publish(phase.sent)
            watcher.sent_at[task_id] = time.perf_counter()
            phase.sent += 1
        await asyncio.sleep(TICK_S)
    await watcher.drained(drain_s)
    phase.cpu_s = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
    phase.latencies = watcher.latencies
    phase.stages = watcher.stages
    phase.elapsed_s = max(watcher.last_at, started + duration_s) - started
    return phase


async def run_rates(
    label: str,
    rates: Sequence[int],
    args: argparse.Namespace,
    watcher: Watcher,
    publish: Callable[[int], Awaitable[str]],
    pids: dict[str, int],
) -> list[Phase]:
    phases: list[Phase] = []
    backlog = False
    for rate in rates:
        if backlog:
            phases.append(Phase(rate, skipped=True))
            continue
        phase = await run_phase(rate, args.duration, args.drain, watcher, publish, pids)
        phases.append(phase)
        cpu = sum(phase.cpu_s.values()) * 1000 / max(1, len(phase.latencies))
        print(
            f"  {label} {rate}/s: {phase.achieved:,.0f} assigned/s, p99 {phase.pct(0.99):,.0f} ms,"
            f" {cpu:.2f} ms CPU/task, {len(watcher.sent_at)} unanswered",
            flush=True,
        )
        for stage, values in phase.stages.items():
            if values:
                print(
                    f"    {stage}: p50 {phase.pct(0.5, values):,.1f} ms,"
                    f" p99 {phase.pct(0.99, values):,.1f} ms",
                    flush=True,
                )
        if watcher.sent_at:
            backlog = True
            watcher.sent_at.clear()
            watcher.estimated_at.clear()
    return phases


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def stop(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        p.terminate()
    for p in procs.values():
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


async def healthy(procs: dict[str, subprocess.Popen[bytes]], ports: dict[str, int]) -> None:
    """Wait (at most 120 s) for every service's ``/healthz`` to answer 200."""
    deadline = time.monotonic() + 120
    async with httpx.AsyncClient() as http:
        for name, port in ports.items():
            while True:
                if procs[name].poll() is not None:
                    raise RuntimeError(f"{name} exited with {procs[name].returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} /healthz not 200 after 120 s")
                await asyncio.sleep(0.2)


def unlimited_subscriptions(path: Path) -> None:
    """Every subscription the shipped models draw on, with no limits (never refused)."""
    models = yaml.safe_load((CONFIG_DIR / "models.yaml").read_text())["models"]
    names = sorted({m["subscription"] for m in models})
    subs = [{"name": n, "kind": "payg", "enforcement": "soft"} for n in names]
    path.write_text(yaml.safe_dump({"subscriptions": subs}))


async def tally_chain(
    box: Sandbox, rates: Sequence[int], args: argparse.Namespace, tmp: Path
) -> list[Phase]:
    """The six services under load; returns one phase per rate."""
    subs = tmp / "subscriptions.yaml"
    unlimited_subscriptions(subs)
    ports = {name: 18600 + i for i, name in enumerate(SERVICES)}
    env = {
        **os.environ,
        "TALLY_NATS_URL": box.nats_url,
        "TALLY_DATABASE_URL": box.database_url,
        "TALLY_REDIS_URL": box.redis_url,
        "TALLY_NAMESPACE": box.namespace,
        "TALLY_LOG_LEVEL": "WARNING",
        "TALLY_QUOTA_SUBSCRIPTIONS_PATH": str(subs),
        **{f"TALLY_{n.upper()}_HTTP_PORT": str(p) for n, p in ports.items()},
    }
    procs = {
        name: start(
            [sys.executable, "-m", "tally.cli.main", "serve", name], env, tmp / f"{name}.log"
        )
        for name in SERVICES
    }
    catalog = Catalog(box.namespace)
    nc = await nats.connect(box.nats_url)
    try:
        await healthy(procs, ports)
        js = nc.jetstream(publish_async_max_pending=20_000)
        watcher = Watcher()
        await nc.subscribe(catalog.subject(TASK_ASSIGNED), cb=watcher.on_answer)
        await nc.subscribe(catalog.subject(TASK_DEFERRED), cb=watcher.on_deferred)
        await nc.subscribe(catalog.subject(TASK_ESTIMATED), cb=watcher.on_estimated)
        subject = catalog.subject(TASK_CREATED)

        async def publish(i: int) -> str:
            title, description, labels = TITLES[i % len(TITLES)]
            e = task_created(
                source="cli",
                workspace="bench",
                title=f"{title} #{i}",
                description=description,
                priority=f"P{i % 3}",
                labels=labels,
            )
            headers = {"Nats-Msg-Id": e.event_id, "content-type": "application/json"}
            await js.publish_async(subject, e.to_json(), headers=headers)
            return e.task_id

        await warm_up(publish, watcher)
        pids = {name: p.pid for name, p in procs.items()}
        return await run_rates("tally", rates, args, watcher, publish, pids)
    finally:
        await nc.close()
        stop(procs)


async def warm_up(publish: Callable[[int], Awaitable[str]], watcher: Watcher) -> None:
    """A few tasks through the path first (connections, caches, first builds)."""
    for i in range(20):
        watcher.sent_at[await publish(10_000_000 + i)] = time.perf_counter()
    await watcher.drained(60)
    if watcher.sent_at:
        raise RuntimeError(f"warm-up: {len(watcher.sent_at)} of 20 never answered")
    if watcher.deferred:
        raise RuntimeError(f"warm-up: {watcher.deferred} of 20 deferred: {watcher.reason}")
    watcher.sent_at.clear()


async def raw_relay(
    box: Sandbox, rates: Sequence[int], args: argparse.Namespace, tmp: Path
) -> list[Phase]:
    """A -> relay -> B -> relay -> C, watched on C as task.assigned is watched."""
    ns = box.namespace
    subjects = [f"{ns}.relay.{hop}" for hop in "abc"]
    streams = [f"{ns.upper()}_RELAY_{hop.upper()}" for hop in "abc"]
    nc = await nats.connect(box.nats_url)
    js = nc.jetstream(publish_async_max_pending=20_000)
    for name, subject in zip(streams, subjects, strict=True):
        await js.add_stream(StreamConfig(name=name, subjects=[subject], duplicate_window=7200))
    hops = ("hop1", "hop2")
    procs = {
        hop: start(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "chain_relay.py"),
                box.nats_url,
                *(streams[i], f"relay-{hop}", subjects[i], subjects[i + 1]),
            ],
            dict(os.environ),
            tmp / f"{hop}.log",
        )
        for i, hop in enumerate(hops)
    }
    try:
        watcher = Watcher()
        await nc.subscribe(subjects[2], cb=watcher.on_answer)
        template = task_created(source="cli", workspace="bench", title=TITLES[0][0])

        async def publish(i: int) -> str:
            e = template.model_copy(update={"task_id": f"T-{i}-{new_id()[:6]}"})
            await js.publish_async(subjects[0], e.to_json(), headers={"Nats-Msg-Id": e.task_id})
            return e.task_id

        await warm_up(publish, watcher)
        pids = {hop: p.pid for hop, p in procs.items()}
        return await run_rates("relay", rates, args, watcher, publish, pids)
    finally:
        stop(procs)
        for name in streams:
            with contextlib.suppress(nats.errors.Error):
                await js.delete_stream(name)
        await nc.close()


def report(tally: list[Phase], relay: list[Phase], load: str) -> None:
    print()
    print("| path | offered/s | assigned/s | p50 ms | p95 ms | p99 ms | CPU ms/task |")
    print("|---|---|---|---|---|---|---|")
    for label, phases in (("tally", tally), ("raw relay", relay)):
        for p in phases:
            if p.skipped:
                print(f"| {label} | {p.rate:,} | skipped (backlog at a lower rate) | | | | |")
                continue
            cpu = sum(p.cpu_ms_per_task(n) for n in p.cpu_s)
            print(
                f"| {label} | {p.rate:,} | {p.achieved:,.0f} | {p.pct(0.5):,.1f} |"
                f" {p.pct(0.95):,.1f} | {p.pct(0.99):,.1f} | {cpu:.2f} |"
            )
    print()
    print("CPU ms per task, per process:")
    for label, phases in (("tally", tally), ("raw relay", relay)):
        for p in phases:
            if not p.skipped:
                per = ", ".join(f"{n} {p.cpu_ms_per_task(n):.2f}" for n in p.cpu_s)
                print(f"  {label} {p.rate:,}/s: {per}")
    print()
    python = platform.python_version()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {python}")
    print(f"load average at start: {load}")


async def main(args: argparse.Namespace) -> None:
    rates = [int(r) for r in args.rates.split(",")]
    load = Path("/proc/loadavg").read_text().split(" ", 3)[:3]  # noqa: ASYNC240
    async with sandbox(TallySettings(), prefix="bc") as box:
        with tempfile.TemporaryDirectory(prefix="bench-chain-") as d:
            tmp = Path(args.logs or d)
            tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
            try:
                relay = await raw_relay(box, rates, args, tmp) if not args.no_relay else []
                tally = await tally_chain(box, rates, args, tmp)
            except Exception:
                for log in sorted(tmp.glob("*.log")):  # noqa: ASYNC240 - reporting a failure
                    print(f"--- {log.name} (last lines)\n{log.read_text()[-3000:]}")
                raise
    report(tally, relay, " ".join(load))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="100,300,1000,2000", help="offered tasks/s")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per rate")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait after")
    parser.add_argument("--quick", action="store_true", help="4 s per rate, 5 s drain")
    parser.add_argument("--logs", help="keep the processes' logs in this directory")
    parser.add_argument("--no-relay", action="store_true", help="skip the raw baseline")
    a = parser.parse_args()
    if a.quick:
        a.duration, a.drain = 4.0, 5.0
    asyncio.run(main(a))
