"""``tally export runs --with-rewards``: the runs a policy or a learning job learned from,
with rewards and group-relative advantages, filtered and paged through the reporter."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import insert
from typer.testing import CliRunner

from tally.cli.main import app
from tally.db.tables import learner_runs, runs
from tally.events import utcnow
from tests.chaos.fleet import Fleet
from tests.integration.conftest import ADMIN, ADMIN_TOKEN
from tests.integration.test_learning_jobs import JOBS, command, until_status

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

N = 40
#: A success earns 0.3, 0.6 or 0.9 (its quality); a failure 0.
REWARDS = (0.3, 0.6, 0.9)


async def seed_runs(h: Harness, workspace: str) -> dict[str, float]:
    """``N`` runs recorded by the tracker and learned by the learner; their rewards."""
    now = utcnow()
    tracked, learned, rewards = [], [], {}
    for i in range(N):
        run_id = f"x-{workspace}-{i}"
        success = i % 4 != 0
        reward = REWARDS[i % 3] if success else 0.0
        rewards[run_id] = reward
        at = now - timedelta(hours=1 + i)
        model = "cheap" if i % 2 else "pricey"
        tracked.append(
            {"run_id": run_id, "workspace": workspace, "task_id": f"xt-{workspace}-{i}",
             "model": model, "outcome": "complete" if success else "error", "success": success,
             "started_at": at - timedelta(minutes=5), "finished_at": at}
        )  # fmt: skip
        learned.append(
            {"run_id": run_id, "workspace": workspace, "task_id": f"xt-{workspace}-{i}",
             "model": model, "task_type": "feature", "band": "medium", "attempt": 1,
             "success": success, "quality": reward, "cost_micros": 10_000, "tokens": 100,
             "reward": reward, "at": at,
             "signals": {"tool_calls": 0, "verification_passed": False, "steps": 1,
                         "quality": reward}}
        )  # fmt: skip
    await h.execute(insert(runs), tracked)
    await h.execute(insert(learner_runs), learned)
    return rewards


async def test_export_runs_with_rewards_returns_what_its_filters_say(
    harness: Harness, workspace: str, tmp_path: Path
) -> None:
    h = harness
    rewards = await seed_runs(h, workspace)
    s = h.settings
    fleet = Fleet(
        {
            "TALLY_NATS_URL": s.nats_url,
            "TALLY_DATABASE_URL": s.database_url,
            "TALLY_REDIS_URL": s.redis_url,
            "TALLY_NAMESPACE": s.namespace,
            "TALLY_REPORTER_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
        },
        tmp_path / "logs",
    )
    try:
        await fleet.start("reporter")
        env = {
            "TALLY_REPORTER_URL": fleet.url("reporter", ""),
            "TALLY_API_TOKEN": ADMIN_TOKEN,
        }
        args = ["export", "runs", "--workspace", workspace, "--with-rewards", "--success-only",
                "--min-reward", "0.5", "--page-size", "7", "--json"]  # fmt: skip
        result = await asyncio.to_thread(CliRunner().invoke, app, args, env=env)
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)
        expected = {r for r, v in rewards.items() if v >= 0.5}
        assert {r["run_id"] for r in rows} == expected  # paged in sevens, none twice
        assert len(rows) == len(expected)
        for row in rows:
            assert row["learned_success"] is True
            assert row["reward"] >= 0.5
            assert row["advantage"] > 0  # above the class's mean reward

        everything = await asyncio.to_thread(
            CliRunner().invoke, app, ["export", "runs", "--workspace", workspace,
                                      "--with-rewards", "--json"], env=env,
        )  # fmt: skip
        all_rows = json.loads(everything.output)
        assert len(all_rows) == N
        assert abs(sum(r["advantage"] for r in all_rows)) < 1e-6  # normalised in the class

        refused = await asyncio.to_thread(
            CliRunner().invoke, app, ["export", "tasks", "--min-reward", "0.5"], env=env
        )
        assert refused.exit_code == 2
        assert "min_reward" in refused.output
    finally:
        fleet.stop()


async def test_a_jobs_runs_export_with_the_jobs_rewards(harness: Harness, workspace: str) -> None:
    h = harness
    await seed_runs(h, workspace)
    await h.start("learner", **JOBS)
    reporter = await h.start("reporter")
    from tally.events.jobs import JobConfig

    # The job rewards by outcome alone: every success 1, whatever its quality.
    job = await command(h, workspace, "start", config=JobConfig(reward="binary", iterations=2))
    await until_status(h, workspace, job["job_id"], "completed")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        params: dict[str, Any] = {
            "workspace": workspace, "with_rewards": "true", "job_id": job["job_id"],
            "min_reward": 0.5, "limit": 100,
        }  # fmt: skip
        page = (await http.get("/export/runs", params=params)).json()
        assert page["next_cursor"] is None
        assert len(page["rows"]) == sum(1 for i in range(N) if i % 4 != 0)
        assert all(
            r["reward"] == 1.0 and r["learning_job_id"] == job["job_id"] for r in page["rows"]
        )
        bad = await http.get("/export/runs", params={"success_only": "true"})
        assert bad.status_code == 400
        assert bad.json()["error"]["field"] == "success_only"
