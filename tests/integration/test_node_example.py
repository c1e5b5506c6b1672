"""The Node.js example of docs/events.md publishes a task and a run that Tally records."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import func, select

from tally.db.tables import run_events, runs, tasks
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "node"
NODE = shutil.which("node")
NPM = shutil.which("npm")


async def _run(*argv: str, cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, f"{' '.join(argv)} failed: {err.decode()[-2000:]}"
    return out.decode()


@pytest.mark.skipif(NODE is None or NPM is None, reason="node and npm are not installed")
async def test_the_node_example_publishes_a_task_and_a_run(harness: Harness) -> None:
    h = harness
    env = {**os.environ, "NATS_URL": h.settings.nats_url, "TALLY_NAMESPACE": h.catalog.namespace}
    if not (EXAMPLE / "node_modules" / "nats").is_dir():
        assert NPM is not None
        await _run(NPM, "ci", "--no-audit", "--no-fund", cwd=EXAMPLE, env=env, timeout=180)
    await h.start("tracker")
    await h.start("estimator")
    reporter = await h.start("reporter")
    env["TALLY_WORKSPACE"] = workspace = f"node-{h.catalog.namespace[-8:]}"
    assert NODE is not None
    out = await _run(NODE, "publish-task-and-run.mjs", cwd=EXAMPLE, env=env, timeout=60)
    ids = json.loads(out.strip().splitlines()[-1])

    async def recorded() -> Any:
        task = (await h.rows(select(tasks).where(tasks.c.task_id == ids["task_id"])))[:1]
        run = (await h.rows(select(runs).where(runs.c.run_id == ids["run_id"])))[:1]
        if task and run and run[0].totals is not None and task[0].story_points is not None:
            return task[0], run[0]
        return None

    task, run = await h.eventually(recorded, timeout=30, what="the Node task and run")
    assert task.workspace == workspace and task.status == "ready_to_review"
    assert run.outcome == "complete" and run.success is True and run.model == "claude-sonnet-4"
    events = await h.scalar(
        select(func.count()).select_from(run_events).where(run_events.c.run_id == ids["run_id"])
    )
    assert events == 4
    assert run.totals["tokens"]["output_tokens"] == 300
    # What `tally report RUN` prints: the reporter's 10-line summary of the Node run.
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        kpi = await http.get(f"/runs/{ids['run_id']}/kpi")
    assert kpi.status_code == 200, kpi.text
    assert len(kpi.json()["summary"]) == 10
    assert run.totals["tokens"]["cache_read_tokens"] == 800
