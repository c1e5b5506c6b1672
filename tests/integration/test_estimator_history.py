"""Estimates learn: from imported history (``tally history import``) and from finished runs."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from tally.cli import history
from tally.db.tables import history_tasks, velocity_logs
from tally.events import (
    Estimate,
    EstimateRequest,
    TaskCreated,
    TaskEstimated,
    new_id,
    utcnow,
)
from tests.integration.builders import bare_run

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

HISTORY_CSV = """id,title,description,story_points,actual_hours,task_type
H-1,Add OAuth login with Google,"OAuth callback, token refresh, login button",8,12,feature
H-2,OAuth login for GitHub accounts,OAuth flow and session login,8,,feature
H-3,Login page with OAuth provider,"login form, OAuth redirect and callback",8,,feature
H-4,Refresh OAuth tokens on login,token refresh for OAuth login sessions,8,,feature
H-5,Fix typo in README,,1,0.5,docs
H-6,Fix typo in docs footer,,1,,docs
H-7,Typo in error message,,1,,docs
"""


@pytest.fixture
def cli_env(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the CLI's settings at this test's NATS namespace."""
    monkeypatch.setenv("TALLY_NATS_URL", harness.settings.nats_url)
    monkeypatch.setenv("TALLY_NAMESPACE", harness.settings.namespace)


async def ask(h: Harness, workspace: str) -> Estimate:
    request = EstimateRequest(
        workspace=workspace,
        title="Add OAuth login for Microsoft accounts",
        description="OAuth callback and login button",
        task_type="feature",
    )
    return await h.client.request(request, Estimate, step="estimator", timeout=10)


async def test_an_estimate_changes_after_history_is_imported(
    harness: Harness, workspace: str, tmp_path: Path, cli_env: None
) -> None:
    h = harness
    await h.start("estimator")
    before = await ask(h, workspace)
    assert before.evidence == ()

    path = tmp_path / "history.csv"
    path.write_text(HISTORY_CSV, encoding="utf-8")
    reply = await history._import(history.read_history(path), workspace, timeout=10)
    assert (reply.imported, reply.history_size) == (7, 7)

    after = await ask(h, workspace)
    cited = {e.task_id for e in after.evidence}
    assert cited and cited <= {"H-1", "H-2", "H-3", "H-4"}
    assert after.story_points == 8 != before.story_points

    # Importing again replaces rows instead of duplicating them.
    again = await history._import(history.read_history(path), workspace, timeout=10)
    assert again.history_size == 7
    count = select(func.count()).select_from(history_tasks)
    assert await h.scalar(count.where(history_tasks.c.workspace == workspace)) == 7


async def test_an_estimate_changes_after_completed_runs_are_recorded(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("estimator", history_check_interval_s=0)
    await h.start("tracker")
    await h.start("learner")
    before = await ask(h, workspace)
    assert before.velocity_source == "prior" and before.evidence == ()

    finished = utcnow()
    done = []
    for i in range(6):
        task = TaskCreated(
            task_id=f"task-{new_id()}",
            workspace=workspace,
            title=f"OAuth login for provider {i}",
            description="OAuth callback, login button and token refresh",
            task_type="feature",
        )
        async with h.client.watch(TaskEstimated, lambda e, t=task: e.task_id == t.task_id) as q:
            await h.client.publish(task)
            await h.next_item(q, what=f"task.estimated for {task.task_id}")
        done.append(task.task_id)
    await h.drained("tracker", "task.estimated")
    for i, task_id in enumerate(done):
        # Each run took 10 hours: far slower than the prior's velocity.
        started = finished - timedelta(hours=10 + i)
        for event in bare_run(workspace, task_id, started=started, finished=finished):
            await h.client.publish(event)

    logged = select(func.count()).select_from(velocity_logs)
    logged = logged.where(velocity_logs.c.workspace == workspace)

    async def all_learned() -> bool:
        return await h.scalar(logged) == len(done)

    await h.eventually(all_learned, timeout=30, what="velocity logs of every run")

    # Measured runs are taken in the background (the warm model answers meanwhile).
    async def measured() -> Estimate | None:
        est = await ask(h, workspace)
        return est if est.velocity_source == "measured" else None

    after = await h.eventually(measured, timeout=30, what="an estimate from measured runs")
    assert after.hours_p50 > before.hours_p50
    assert {e.task_id for e in after.evidence} & set(done)


def _rows(n: int) -> list[tuple[str, str, str, int]]:
    """History whose ids sort differently as strings than in file order (XD-10 < XD-9)."""
    rows = []
    for i in range(1, n + 1):
        if i % 3 == 0:
            rows.append((f"XD-{i}", f"Migrate billing schema {i}", "database migration", 13))
        elif i % 3 == 1:
            rows.append((f"XD-{i}", f"Fix typo {i}", "spelling in docs", 1))
        else:
            points = 3 if i < n // 2 else 5
            rows.append((f"XD-{i}", f"Add settings toggle {i}", "a new switch", points))
    return rows


def _csv(rows: list[tuple[str, str, str, int]], dated: bool) -> str:
    start = utcnow() - timedelta(days=len(rows))
    lines = ["id,title,description,story_points" + (",completed_at" if dated else "")]
    for i, (task_id, title, description, points) in enumerate(rows):
        when = f",{(start + timedelta(days=i)).isoformat()}" if dated else ""
        lines.append(f"{task_id},{title},{description},{points}{when}")
    return "\n".join(lines) + "\n"


async def test_history_without_dates_keeps_its_file_order(
    harness: Harness, workspace: str, tmp_path: Path, cli_env: None
) -> None:
    """The defect: rows without dates were read back sorted by id as a string."""
    from services.estimator.repo import EstimatorRepo

    rows = _rows(120)
    path = tmp_path / "undated.csv"
    path.write_text(_csv(rows, dated=False), encoding="utf-8")
    await harness.start("estimator")
    await history._import(history.read_history(path), workspace, timeout=30)
    stored = await EstimatorRepo(harness.engine).history(workspace)
    assert [t.task_id for t in stored] == [r[0] for r in rows]


async def test_a_history_without_dates_estimates_as_with_dates(
    harness: Harness, tmp_path: Path, cli_env: None
) -> None:
    h = harness
    await h.start("estimator")
    rows = _rows(120)
    answers = []
    for dated in (True, False):
        workspace = f"ws-{new_id()[:12]}"
        path = tmp_path / f"history-{dated}.csv"
        path.write_text(_csv(rows, dated=dated), encoding="utf-8")
        await history._import(history.read_history(path), workspace, timeout=30)
        answers.append(
            [
                (e.story_points, e.points_source, e.hours_p50)
                for e in [
                    await h.client.request(
                        EstimateRequest(workspace=workspace, title=title),
                        Estimate,
                        step="estimator",
                        timeout=60,
                    )
                    for title in ("Add settings toggle", "Migrate billing schema", "Fix typo")
                ]
            ]
        )
    assert answers[0] == answers[1]


async def test_work_lane_time_and_logged_runs_are_measured_hours(harness: Harness) -> None:
    """Every measured duration counts: lane times of finished tasks and the learner's runs."""
    from services.estimator.repo import EstimatorRepo
    from tally.db.tables import task_status_events, tasks

    workspace = f"ws-{new_id()[:12]}"
    start = utcnow() - timedelta(days=2)
    await harness.execute(
        tasks.insert(),
        [
            {
                "task_id": f"{workspace}-{i}",
                "workspace": workspace,
                "title": f"Task {i}",
                "priority": "P2",
                "story_points": 3.0,
                "completed_at": start + timedelta(hours=10),
                "event_id": new_id(),
            }
            for i in range(2)
        ],
    )
    moves = [("backlog", "in_progress", 0), ("in_progress", "ready_to_review", 4)]
    moves += [("ready_to_review", "in_progress", 5), ("in_progress", "completed", 6.5)]
    await harness.execute(
        task_status_events.insert(),
        [
            {
                "event_id": new_id(),
                "task_id": f"{workspace}-0",
                "workspace": workspace,
                "from_status": before,
                "to_status": after,
                "changed_at": start + timedelta(hours=at),
            }
            for before, after, at in moves
        ],
    )
    await harness.execute(
        velocity_logs.insert(),
        {
            "run_id": new_id(),
            "task_id": f"{workspace}-1",
            "workspace": workspace,
            "model": "opus",
            "task_type": "bug",
            "story_points": 3.0,
            "actual_hours": 2.0,
            "at": utcnow(),
        },
    )
    found = await EstimatorRepo(harness.engine).durations(workspace)
    by_task = {d.task_id: d for d in found}
    assert by_task[f"{workspace}-0"].hours == pytest.approx(5.5)  # 4 h + 1.5 h in the lane
    assert by_task[f"{workspace}-1"].hours == 2.0 and by_task[f"{workspace}-1"].model == "opus"
