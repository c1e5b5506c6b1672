"""A learner killed with ``kill -9`` in the middle of a learning job: another learner
process resumes the job from its last written iteration, and no iteration counts twice.

The learners are real processes (``tally serve learner``), killed by pid.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import select

from tally.db.tables import learning_jobs
from tally.events.jobs import JobConfig
from tests.chaos.fleet import Fleet
from tests.integration.test_learning_jobs import command, seed, until_status

if TYPE_CHECKING:
    from pathlib import Path

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

ITERATIONS = 600


async def test_a_job_whose_worker_is_killed_resumes_elsewhere_counting_no_iteration_twice(
    harness: Harness, workspace: str, tmp_path: Path
) -> None:
    h = harness
    await seed(h, workspace)
    s = h.settings
    fleet = Fleet(
        {
            "TALLY_NATS_URL": s.nats_url,
            "TALLY_DATABASE_URL": s.database_url,
            "TALLY_REDIS_URL": s.redis_url,
            "TALLY_NAMESPACE": s.namespace,
            "TALLY_LEARNER_DAILY_ENABLED": "false",
            "TALLY_LEARNER_JOB_WORKERS": "1",
            "TALLY_LEARNER_JOB_ACK_WAIT_S": "3",
        },
        tmp_path / "logs",
    )
    try:
        await fleet.start("learner")
        config = JobConfig(iterations=ITERATIONS, eval_every=500)
        job_id = (await command(h, workspace, "start", config=config))["job_id"]

        async def midway() -> Any:
            job = await command(h, workspace, "get", job_id=job_id)
            return job if job["status"] == "running" and job["iteration"] >= 10 else None

        await h.eventually(midway, timeout=60, what="the job to be under way")
        pid = fleet.kill("learner")
        stopped = (await h.rows(select(learning_jobs).where(learning_jobs.c.job_id == job_id)))[0]
        assert stopped.status in ("running", "evaluating")
        assert 10 <= stopped.iteration < ITERATIONS, "kill the worker mid-job"

        await fleet.restart("learner")  # another process: the job's message comes back to it
        done = await until_status(h, workspace, job_id, "completed", "failed", timeout=180)
    finally:
        fleet.stop()
    assert done["status"] == "completed", done["error"]
    assert done["attempts"] == 2  # claimed by the killed worker, then by the new one
    row = (await h.rows(select(learning_jobs).where(learning_jobs.c.job_id == job_id)))[0]
    assert row.worker != f"{row.worker.split(':')[0]}:{pid}"
    # One policy update per iteration, exactly: none was lost and none applied twice.
    assert row.state["trainer"]["version"] == ITERATIONS
    history = [step["iteration"] for step in row.state["history"]]
    assert history == list(range(ITERATIONS - len(history) + 1, ITERATIONS + 1))
