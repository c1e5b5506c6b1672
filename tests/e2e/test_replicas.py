"""Two replicas of every service (each its own process) give the same results as one.

The same tasks and runs go through a Tally of one process per service, then through one
of two processes per service, whose learner holding the lease is killed with ``kill -9``
half-way: every task is assigned and reserved once, every run recorded and learned once,
routing policies come out in order, and the figures equal the single-replica ones.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

import tally
from tally.client import TallyClient
from tally.db import create_engine
from tally.db.tables import (
    assignments,
    estimates,
    learner_runs,
    learner_state,
    model_scores,
    quota_ledger,
    token_usage,
)
from tally.db.tables import runs as runs_table
from tally.events import PolicyUpdated, TaskAssigned, TaskCreated, TaskEstimated
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tests.chaos.deployment import FAST
from tests.chaos.fleet import Fleet, eventually
from tests.chaos.workload import subscriptions_file

pytestmark = pytest.mark.e2e

TASKS = 16
WORKSPACE = "replicas"


@dataclass(frozen=True)
class Results:
    """What a user of either deployment would compare."""

    models: dict[str, str]  # task -> model assigned
    assignment_rows: Counter[str]  # task -> assignments stored
    reserves: Counter[str]  # reservation -> reserve rows in the ledger
    assigned_events: Counter[str]  # task -> distinct task.assigned events seen
    runs_recorded: int
    runs_learned: int
    samples: int  # summed over model_scores: a run learned twice counts twice
    policy_version: int
    policy_versions_seen: list[int]  # in the order they were published


@contextlib.asynccontextmanager
async def fleets(
    base: TallySettings, workdir: Path, replicas: int
) -> AsyncIterator[tuple[TallySettings, list[Fleet]]]:
    """``replicas`` processes of each service on a fresh namespace and database."""
    async with sandbox(base, prefix="rp", database=True) as s:
        env = {
            "TALLY_NATS_URL": s.nats_url,
            "TALLY_DATABASE_URL": s.database_url,
            "TALLY_REDIS_URL": s.redis_url,
            "TALLY_NAMESPACE": s.namespace,
            "TALLY_QUOTA_SUBSCRIPTIONS_PATH": str(subscriptions_file(workdir)),
            "TALLY_LEARNER_LEASE_TTL_S": "3",
            **FAST,
        }
        started = [Fleet(env, workdir / f"logs-{replicas}-{i}") for i in range(replicas)]
        try:
            # All at once: their start-up is mostly imports, which overlap.
            await asyncio.gather(*(fleet.start(timeout=180) for fleet in started))
            yield s, started
        finally:
            for fleet in started:
                fleet.stop()


async def _lease_holder(learners: list[Fleet]) -> Fleet | None:
    """The fleet whose learner consumes ``run.recorded`` now (it holds the lease)."""
    async with httpx.AsyncClient(timeout=3.0) as http:
        for fleet in learners:
            report = (await http.get(fleet.url("learner"))).json()
            if report["consumers"]:
                return fleet
    return None


async def _scalar(engine: Any, query: Any) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(query)).scalar()


async def drive(s: TallySettings, deployment: list[Fleet]) -> Results:
    """Create the tasks, run each assignment through the SDK, wait until all is learned."""
    engine = create_engine(s.database_url)
    ids = [f"rep-{i:02d}" for i in range(TASKS)]
    seen_assigned: dict[str, set[str]] = {t: set() for t in ids}
    policies: dict[str, int] = {}
    try:
        async with (
            TallyClient.connect(s.nats_url, namespace=s.namespace, source="test") as client,
            client.watch(TaskAssigned, lambda e: e.workspace == WORKSPACE) as assigned,
            client.watch(PolicyUpdated, lambda e: e.workspace == WORKSPACE) as policy_q,
        ):
            for i, task_id in enumerate(ids):
                await client.publish(
                    TaskCreated(
                        workspace=WORKSPACE,
                        task_id=task_id,
                        title=f"Fix flaky test number {i} in the {('api', 'ui')[i % 2]}",
                        description="- reproduce\n- fix",
                        priority="P2",
                    )
                )
            by_task: dict[str, TaskAssigned] = {}
            while len(by_task) < TASKS:
                event = await asyncio.wait_for(assigned.get(), 120)
                seen_assigned[event.task_id].add(event.event_id)
                by_task.setdefault(event.task_id, event)

            async with tally.connect(s.nats_url, workspace=WORKSPACE, namespace=s.namespace) as t:
                for n, task_id in enumerate(ids):
                    if n == TASKS // 2 and len(deployment) > 1:
                        holder = await eventually(
                            lambda: _lease_holder(deployment),
                            timeout=30,
                            what="a learner holding the lease",
                        )
                        holder.kill("learner")
                    a = by_task[task_id]
                    async with t.run(
                        task_id,
                        model=a.model,
                        provider=a.provider,
                        reservation_id=a.reservation.reservation_id,
                    ) as run:
                        await run.worker_call(
                            worker="coder",
                            model=a.model,
                            usage={"input_tokens": 100 + n, "output_tokens": 50 + n},
                        )

            learned: Callable[[], Awaitable[bool]] = lambda: _count_is(  # noqa: E731
                engine, learner_runs, TASKS
            )
            await eventually(learned, timeout=120, what=f"{TASKS} runs learned")
            # Drain the policies published so far (a republish carries the same id).
            await asyncio.sleep(0)
            seen: dict[str, int] = {}
            while not policy_q.empty():
                p = policy_q.get_nowait()
                seen.setdefault(p.event_id, p.version)
            policies = seen
        async with engine.connect() as conn:
            rows = (await conn.execute(select(assignments.c.task_id, assignments.c.model))).all()
            ledger = (
                await conn.execute(
                    select(quota_ledger.c.reservation_id).where(quota_ledger.c.op == "reserve")
                )
            ).all()
        return Results(
            models={r.task_id: r.model for r in rows},
            assignment_rows=Counter(r.task_id for r in rows),
            reserves=Counter(r.reservation_id for r in ledger),
            assigned_events=Counter({t: len(v) for t, v in seen_assigned.items()}),
            runs_recorded=await _scalar(engine, select(func.count()).select_from(runs_table)),
            runs_learned=await _scalar(engine, select(func.count()).select_from(learner_runs)),
            samples=await _scalar(engine, select(func.sum(model_scores.c.samples))),
            policy_version=await _scalar(engine, select(func.max(learner_state.c.version))) or 0,
            policy_versions_seen=list(policies.values()),
        )
    finally:
        await engine.dispose()


async def _count_is(engine: Any, table: Any, n: int) -> bool:
    return bool(await _scalar(engine, select(func.count()).select_from(table)) == n)


async def test_two_replicas_of_every_service_give_the_results_of_one(
    base_settings: TallySettings, tmp_path: Path
) -> None:
    async with fleets(base_settings, tmp_path, replicas=1) as (s, one):
        single = await drive(s, one)
    async with fleets(base_settings, tmp_path, replicas=2) as (s, two):
        double = await drive(s, two)

    for results in (single, double):
        assert len(results.models) == TASKS
        assert set(results.assignment_rows.values()) == {1}  # no task assigned twice
        assert len(results.reserves) == TASKS and set(results.reserves.values()) == {1}
        assert set(results.assigned_events.values()) == {1}
        assert results.runs_recorded == results.runs_learned == TASKS
        assert results.samples == TASKS  # no run learned twice
        versions = results.policy_versions_seen
        assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert double.models == single.models
    assert double.samples == single.samples
    assert double.policy_version == single.policy_version


KILLED_TASKS = 30
#: Worker calls per run, and their usage: (input, output) tokens of call ``c`` of run ``n``.
CALLS = 3


def _usage(n: int, c: int) -> tuple[int, int]:
    return 200 + 10 * n + c, 40 + n + c


async def _runs_for(
    t: Any, queue: asyncio.Queue[TaskAssigned], count: int, done: list[str]
) -> None:
    """Run each assignment as an agent would, as it arrives (``count`` of them)."""
    for _ in range(count):
        a = await asyncio.wait_for(queue.get(), 120)
        async with t.run(
            a.task_id,
            run_id=f"run-{a.task_id}",
            model=a.model,
            provider=a.provider,
            reservation_id=a.reservation.reservation_id,
        ) as run:
            for c in range(CALLS):
                inp, out = _usage(int(a.task_id.rsplit("-", 1)[1]), c)
                await run.worker_call(
                    worker="coder",
                    model=a.model,
                    usage={"input_tokens": inp, "output_tokens": out},
                )
        done.append(a.task_id)


async def test_killing_one_process_of_each_service_mid_stream_loses_nothing(
    base_settings: TallySettings, tmp_path: Path
) -> None:
    """Two processes of every service; while tasks are being estimated and assigned and
    runs reported, one process of each is killed with ``kill -9`` (the learner holding the
    lease among them). Every task is estimated and assigned once, every run recorded once
    with its totals, the quota ledger settles exactly what token_usage holds, and the
    surviving learner learns each run once."""
    ids = [f"kill-{i:02d}" for i in range(KILLED_TASKS)]
    estimated: dict[str, set[str]] = {t: set() for t in ids}
    assigned: dict[str, set[str]] = {t: set() for t in ids}
    first: dict[str, TaskAssigned] = {}
    async with fleets(base_settings, tmp_path, replicas=2) as (s, deployment):
        engine = create_engine(s.database_url)
        try:
            async with (
                TallyClient.connect(s.nats_url, namespace=s.namespace, source="test") as client,
                client.watch(TaskEstimated, lambda e: e.workspace == WORKSPACE) as est_q,
                client.watch(TaskAssigned, lambda e: e.workspace == WORKSPACE) as asg_q,
                tally.connect(s.nats_url, workspace=WORKSPACE, namespace=s.namespace) as t,
            ):
                to_run: asyncio.Queue[TaskAssigned] = asyncio.Queue()

                async def collect() -> None:
                    while True:
                        event = await asyncio.wait_for(asg_q.get(), 180)
                        assigned[event.task_id].add(event.event_id)
                        if event.task_id not in first:
                            first[event.task_id] = event
                            to_run.put_nowait(event)

                async def publish(batch: list[str]) -> None:
                    for task_id in batch:
                        i = int(task_id.rsplit("-", 1)[1])
                        await client.publish(
                            TaskCreated(
                                workspace=WORKSPACE,
                                task_id=task_id,
                                title=f"Fix flaky test number {i} in the {('api', 'ui')[i % 2]}",
                                description="- reproduce\n- fix",
                                priority="P2",
                            )
                        )

                done: list[str] = []
                collector = asyncio.create_task(collect())
                runner = asyncio.create_task(_runs_for(t, to_run, KILLED_TASKS, done))
                try:
                    half = KILLED_TASKS // 2
                    await publish(ids[:half])

                    async def some_runs_done() -> bool:
                        return len(done) >= 4

                    await eventually(some_runs_done, timeout=120, what="the first runs")
                    # Mid-stream: the second half of the tasks is on its way and runs are
                    # being reported while one process of every service dies.
                    publishing = asyncio.create_task(publish(ids[half:]))
                    holder = await eventually(
                        lambda: _lease_holder(deployment),
                        timeout=30,
                        what="a learner holding the lease",
                    )
                    other = next(f for f in deployment if f is not holder)
                    holder.kill("learner")
                    for service in ("estimator", "assigner", "quota", "tracker", "reporter"):
                        other.kill(service)
                    await publishing
                    await asyncio.wait_for(runner, 240)
                finally:
                    collector.cancel()
                    runner.cancel()
                    with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                        await collector
                while not est_q.empty():
                    e = est_q.get_nowait()
                    estimated[e.task_id].add(e.event_id)

            expected = {
                f"run-{task_id}": sum(
                    sum(_usage(int(task_id.rsplit("-", 1)[1]), c)) for c in range(CALLS)
                )
                for task_id in ids
            }

            async def settled() -> bool:
                facts = await _kill_facts(engine)
                return bool(
                    facts["learned"] == KILLED_TASKS
                    and facts["settled"]
                    == {first[t].reservation.reservation_id: expected[f"run-{t}"] for t in ids}
                )

            await eventually(settled, timeout=180, what="every run settled and learned")
            facts = await _kill_facts(engine)
        finally:
            await engine.dispose()

    assert {t: len(v) for t, v in estimated.items() if len(v) != 1} == {}
    assert {t: len(v) for t, v in assigned.items() if len(v) != 1} == {}
    assert facts["estimates"] == KILLED_TASKS
    assert (
        set(facts["assignment_rows"].values()) == {1}
        and len(facts["assignment_rows"]) == KILLED_TASKS
    )
    assert set(facts["reserves"].values()) == {1} and len(facts["reserves"]) == KILLED_TASKS
    assert facts["runs"] == KILLED_TASKS
    assert facts["usage"] == expected  # every call stored once
    assert facts["calls"] == {r: CALLS for r in expected}
    assert facts["totals"] == expected  # runs.totals: in + out tokens
    assert sum(facts["settled"].values()) == sum(facts["usage"].values())
    assert facts["learned"] == facts["samples"] == KILLED_TASKS


async def _kill_facts(engine: Any) -> dict[str, Any]:
    """What Postgres holds for the kill test's workspace."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(assignments.c.task_id))).all()
        reserves = (
            await conn.execute(
                select(quota_ledger.c.reservation_id).where(quota_ledger.c.op == "reserve")
            )
        ).all()
        ledger = (
            await conn.execute(
                select(quota_ledger.c.reservation_id, quota_ledger.c.tokens).where(
                    quota_ledger.c.op.in_(("settle", "resettle"))
                )
            )
        ).all()
        usage = (
            await conn.execute(
                select(
                    token_usage.c.run_id,
                    func.count(),
                    func.sum(token_usage.c.input_tokens + token_usage.c.output_tokens),
                ).group_by(token_usage.c.run_id)
            )
        ).all()
        totals = (await conn.execute(select(runs_table.c.run_id, runs_table.c.totals))).all()
        settled: dict[str, int] = {}
        for rid, tokens in ledger:  # per reservation: the largest cumulative settle
            settled[rid] = max(settled.get(rid, 0), int(tokens))
        return {
            "estimates": await _scalar(engine, select(func.count()).select_from(estimates)),
            "assignment_rows": Counter(r.task_id for r in rows),
            "reserves": Counter(r.reservation_id for r in reserves),
            "settled": settled,
            "usage": {r[0]: int(r[2]) for r in usage},
            "calls": {r[0]: int(r[1]) for r in usage},
            "runs": len(totals),
            "totals": {
                r.run_id: sum(
                    int((r.totals or {}).get("tokens", {}).get(k) or 0)
                    for k in ("input_tokens", "output_tokens")
                )
                for r in totals
            },
            "learned": await _scalar(engine, select(func.count()).select_from(learner_runs)),
            "samples": await _scalar(engine, select(func.sum(model_scores.c.samples))) or 0,
        }
