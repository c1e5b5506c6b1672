"""Learning jobs in the learner: run to completed with a report, cancel, budget, promote,
and 100 jobs taken in priority order."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, insert, select
from typer.testing import CliRunner

from tally import metrics
from tally.cli.main import app
from tally.db.tables import learner_propensities, learner_runs, learning_job_runs, learning_jobs
from tally.errors import PermanentError
from tally.events import PolicyUpdated, utcnow
from tally.events.jobs import JobConfig, LearningJobCommand, LearningJobReply

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: The learner with its job workers and no daily pass.
JOBS = {"daily_enabled": False, "job_workers": 2, "job_metrics_every_s": 0.2}


async def seed(h: Harness, workspace: str, n: int = 120) -> None:
    """``n`` recorded runs in two classes: ``cheap`` succeeds more often than ``pricey``;
    each assigned with probability 1/2 (the propensity the assigner logged)."""
    now = utcnow()
    runs, props = [], []
    for i in range(n):
        model = "cheap" if i % 2 else "pricey"
        success = (i % 5 != 0) if model == "cheap" else (i % 3 == 0)
        task_id = f"t-{workspace}-{i}"
        runs.append(
            {
                "run_id": f"r-{workspace}-{i}",
                "workspace": workspace,
                "task_id": task_id,
                "model": model,
                "task_type": "feature" if i % 4 < 2 else "bug",
                "band": "medium",
                "attempt": 1,
                "success": success,
                "quality": 1.0 if success else 0.0,
                "cost_micros": 50_000 if model == "cheap" else 1_000_000,
                "tokens": 4_000,
                "reward": 1.0 if success else 0.0,
                "at": now - timedelta(hours=1 + i),
                "signals": {"tool_calls": 1, "verification_passed": success, "steps": 5},
            }
        )
        props.append(
            {
                "task_id": task_id,
                "attempt": 1,
                "workspace": workspace,
                "model": model,
                "strategy": "learned",
                "propensity": 0.5,
            }
        )
    await h.execute(insert(learner_runs), runs)
    await h.execute(insert(learner_propensities), props)


async def command(h: Harness, workspace: str, action: str, **fields: Any) -> dict[str, Any]:
    reply = await h.client.request(
        LearningJobCommand(action=action, workspace=workspace, **fields),  # type: ignore[arg-type]
        LearningJobReply,
        step="learner",
    )
    return reply.jobs[0]


async def until_status(
    h: Harness, workspace: str, job_id: str, *statuses: str, timeout: float = 60
) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        job = await command(h, workspace, "get", job_id=job_id)
        return job if job["status"] in statuses else None

    return await h.eventually(check, timeout=timeout, what=f"job {job_id} to be {statuses}")


async def test_a_job_runs_to_completed_with_a_report_against_the_live_policy(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    await h.start("learner", **JOBS)
    config = JobConfig(window="30d", reward="outcome_shaped", lr=0.1, iterations=12, eval_every=2)
    job = await command(h, workspace, "start", config=config, name="first")
    assert job["status"] == "queued"
    done = await until_status(h, workspace, job["job_id"], "completed", "failed")
    assert done["status"] == "completed", done["error"]
    assert done["iteration"] == 12
    assert done["promoted"] is None  # promotion is asked for, unless the job says otherwise
    summary = done["report"]["summary"]
    for metric in ("reward", "success", "cost_usd"):
        assert summary[metric]["candidate"] is not None
        assert summary[metric]["live"] is not None
    assert summary["method"] == "snips"
    assert 0.0 <= summary["p_value"] <= 1.0
    # Six evaluations were checkpointed; the best five and the newest are kept.
    assert 1 <= len(done["checkpoints"]) <= 6
    assert done["checkpoints"][-1]["iteration"] == 12
    # Every run of the window was learned from (the held-out ones judge), with rewards.
    count = await h.scalar(select(func.count()).where(learning_job_runs.c.job_id == job["job_id"]))
    assert count == 120


async def test_bad_configuration_is_refused_naming_the_field(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("learner", **JOBS)
    with pytest.raises(PermanentError, match="reward: no reward named 'nope'"):
        await command(h, workspace, "start", config=JobConfig(reward="nope"))
    with pytest.raises(PermanentError, match="job_id"):
        await command(h, workspace, "get", job_id="job-unknown")


async def test_a_job_without_data_fails_and_says_why(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("learner", **JOBS)
    job = await command(h, workspace, "start", config=JobConfig(iterations=3))
    done = await until_status(h, workspace, job["job_id"], "completed", "failed")
    assert done["status"] == "failed"
    assert "no task class has two training runs" in done["error"]


async def test_cancel_stops_a_running_job_at_its_next_iteration(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    await h.start("learner", **JOBS)
    job = await command(h, workspace, "start", config=JobConfig(iterations=1_000_000))

    async def running() -> dict[str, Any] | None:
        got = await command(h, workspace, "get", job_id=job["job_id"])
        return got if got["status"] == "running" and got["iteration"] >= 3 else None

    await h.eventually(running, timeout=30, what="the job to run")
    await command(h, workspace, "cancel", job_id=job["job_id"])
    done = await until_status(h, workspace, job["job_id"], "cancelled")
    stopped_at = done["iteration"]
    assert stopped_at < 1_000_000
    again = await command(h, workspace, "get", job_id=job["job_id"])
    assert again["iteration"] == stopped_at  # nothing ran after the cancel


async def test_a_job_stops_when_its_budget_is_spent_after_alerts(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    # A CPU second costs $10 here: a budget of $0.05 is a few milliseconds of compute.
    await h.start("learner", **JOBS, job_usd_per_cpu_hour=36_000.0)
    config = JobConfig(iterations=1_000_000, budget_usd=0.05)
    job = await command(h, workspace, "start", config=config)
    done = await until_status(h, workspace, job["job_id"], "failed", "completed")
    assert done["status"] == "failed"
    assert done["error"].startswith("budget: spent $")
    assert done["budget_alerts"] == ["75%", "90%"]
    assert done["spent_usd"] >= 0.05
    assert done["iteration"] < 1_000_000


async def test_promote_publishes_the_candidate_as_the_live_policy_with_who_and_why(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    await h.start("learner", **JOBS)
    job = await command(h, workspace, "start", config=JobConfig(iterations=4, eval_every=2))
    await until_status(h, workspace, job["job_id"], "completed")
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as q:
        promoted = await command(
            h, workspace, "promote", job_id=job["job_id"], by="ana", note="beats live"
        )
        policy = await h.next_item(q, what="learner.policy.updated")
    assert promoted["promoted"]["by"] == "ana"
    assert promoted["promoted"]["note"] == "beats live"
    assert policy.version == promoted["promoted"]["version"] == 1
    assert set(policy.models) >= {"cheap", "pricey"}


async def test_auto_promote_makes_a_significantly_better_candidate_live(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace, n=400)
    await h.start("learner", **JOBS)
    config = JobConfig(iterations=4, eval_every=2, auto_promote=True)
    async with h.client.watch(PolicyUpdated, lambda e: e.workspace == workspace) as q:
        job = await command(h, workspace, "start", config=config)
        done = await until_status(h, workspace, job["job_id"], "completed")
        assert done["report"]["summary"]["significantly_better"] is True
        policy = await h.next_item(q, what="the promoted policy")

    async def promoted() -> dict[str, Any] | None:
        got = await command(h, workspace, "get", job_id=job["job_id"])
        return got["promoted"]  # type: ignore[no-any-return]

    record = await h.eventually(promoted, what="the promotion to be recorded")
    assert record["by"] == "auto-promote"
    assert record["version"] == policy.version


async def test_a_hundred_jobs_all_finish_p0_first(harness: Harness, workspace: str) -> None:
    h = harness
    await seed(h, workspace, n=40)
    # One learner answers commands; the workers start once every job is queued.
    await h.start("learner", daily_enabled=False, jobs_enabled=False)
    small = {"iterations": 2, "eval_every": 2}
    ids: dict[str, list[str]] = {"P2": [], "P1": [], "P0": []}
    for priority, count in (("P2", 50), ("P1", 25), ("P0", 25)):
        for _ in range(count):
            config = JobConfig(priority=priority, **small)  # type: ignore[arg-type]
            ids[priority].append((await command(h, workspace, "start", config=config))["job_id"])
    await h.start("learner", **{**JOBS, "job_workers": 8})

    async def all_done() -> list[Any] | None:
        rows = await h.rows(
            select(
                learning_jobs.c.priority, learning_jobs.c.status, learning_jobs.c.started_at
            ).where(learning_jobs.c.workspace == workspace)
        )
        return rows if all(r.status == "completed" for r in rows) else None

    rows = await h.eventually(all_done, timeout=240, what="100 jobs to complete")
    assert len(rows) == 100
    started = {p: [r.started_at for r in rows if r.priority == p] for p in ("P0", "P1", "P2")}
    assert max(started["P0"]) < min(started["P2"]), "a P2 job started before a P0 job"
    assert max(started["P0"]) < min(started["P1"])

    async def counted() -> bool:
        gauge = metrics.LEARNING_JOBS.labels("completed")
        return gauge._value.get() >= 100  # type: ignore[attr-defined,no-any-return]

    await h.eventually(counted, what="tally_learning_jobs{status=completed} to count 100")


async def cli(h: Harness, workspace: str, *args: str) -> Any:
    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.settings.namespace,
        "TALLY_WORKSPACE": workspace,
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


def printed(output: str) -> Any:
    """The JSON a command printed (the in-process learner's log lines share stdout)."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line in ("{", "[", "[]"))
    return json.loads("\n".join(lines[start:]))


async def test_tally_learn_start_waits_for_the_report_then_cancel_and_list(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    await h.start("learner", **JOBS)
    result = await cli(
        h, workspace, "learn", "start", "--window", "30d", "--reward", "outcome_shaped",
        "--lr", "0.1", "--iterations", "6", "--eval-every", "3", "--wait", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = printed(result.output)
    assert job["status"] == "completed"
    summary = job["report"]["summary"]
    assert {"reward", "success", "cost_usd", "p_value"} <= set(summary)
    shown = await cli(h, workspace, "learn", "report", job["job_id"])
    assert shown.exit_code == 0, shown.output
    assert "candidate vs live: p =" in shown.output
    for name in ("candidate", "live", "best_single", "uniform"):
        assert name in shown.output

    started = await cli(h, workspace, "learn", "start", "--iterations", "1000000", "--json")
    long_job = printed(started.output)["job_id"]
    await until_status(h, workspace, long_job, "running")
    cancelled = await cli(h, workspace, "learn", "cancel", long_job)
    assert cancelled.exit_code == 0, cancelled.output
    await until_status(h, workspace, long_job, "cancelled")
    listed = await cli(h, workspace, "learn", "list", "--json")
    statuses = {j["job_id"]: j["status"] for j in printed(listed.output)}
    assert statuses == {job["job_id"]: "completed", long_job: "cancelled"}

    bad = await cli(h, workspace, "learn", "start", "--reward", "nope")
    assert bad.exit_code == 2
    assert "reward: no reward named 'nope'" in bad.output
