"""The estimator against real NATS and Postgres: tasks in, estimates out, history used."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from services.estimator.repo import EstimatorRepo
from tally.db.tables import estimates, history_tasks
from tally.events import Estimate, EstimateRequest, TaskCreated, TaskEstimated, new_id
from tests.integration.conftest import eventually

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

FIBONACCI = (1, 2, 3, 5, 8, 13, 21)


async def estimated_for(h: Harness, task: TaskCreated) -> TaskEstimated:
    """Publish ``task`` and wait for its ``task.estimated``."""
    async with h.client.watch(TaskEstimated, lambda e: e.task_id == task.task_id) as q:
        await h.client.publish(task)
        return await h.next_item(q, what=f"task.estimated for {task.task_id}")


async def test_a_new_task_is_estimated_and_the_estimate_kept(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("estimator")
    task = TaskCreated(
        task_id=f"task-{new_id()}",
        workspace=workspace,
        title="Add OAuth login",
        description="- callback endpoint\n- token refresh\n- login button",
        priority="P1",
        labels=("backend",),
    )
    est = (await estimated_for(h, task)).estimate

    assert est.task_id == task.task_id
    assert est.story_points in FIBONACCI
    assert 0 < est.hours_p50 <= est.hours_p90
    assert [s.title for s in est.subtasks] == ["callback endpoint", "token refresh", "login button"]
    assert all(s.story_points in FIBONACCI for s in est.subtasks)
    assert 0 < est.value_score <= 100
    assert est.tokens.total > 0

    # The row is stored while the event is published: it may land a moment later.
    async def stored() -> list[Any]:
        return await h.rows(select(estimates).where(estimates.c.task_id == task.task_id))

    row = (await eventually(stored, what="the estimate's row"))[0]
    assert row.workspace == workspace
    assert (row.story_points, row.hours_p50, row.value_score) == (
        est.story_points,
        est.hours_p50,
        est.value_score,
    )


async def test_an_estimate_is_announced_while_its_row_is_being_stored(
    harness: Harness, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The assigner waits for task.estimated; the estimates table is for reports. Neither
    # waits for the other, and the task is acknowledged only once both are done.
    h = harness
    stored = asyncio.Event()
    save_many = EstimatorRepo.save_many

    async def slow_save(self: EstimatorRepo, events: Sequence[TaskEstimated]) -> None:
        await stored.wait()
        await save_many(self, events)

    monkeypatch.setattr(EstimatorRepo, "save_many", slow_save)
    await h.start("estimator")
    task = TaskCreated(task_id=f"task-{new_id()}", workspace=workspace, title="Fix typo")
    try:
        assert (await estimated_for(h, task)).task_id == task.task_id
    finally:
        stored.set()

    async def row() -> bool:
        query = select(estimates.c.task_id).where(estimates.c.task_id == task.task_id)
        return await h.scalar(query) is not None

    await eventually(row, what="the estimate's row")


async def test_an_estimate_only_request_creates_nothing(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("estimator")
    est = await h.client.request(
        EstimateRequest(
            workspace=workspace,
            title="Fix typo in README",
            priority="P4",
            labels=("docs",),
        ),
        Estimate,
        step="estimator",
    )
    assert est.task_id is None
    assert est.story_points in FIBONACCI and est.hours_p50 <= est.hours_p90
    count = select(func.count()).select_from(estimates).where(estimates.c.workspace == workspace)
    assert await h.scalar(count) == 0


async def test_an_invalid_task_is_dead_lettered_and_the_next_one_estimated(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("estimator")
    bad_id = f"bad-{new_id()}"
    bad = {"task_id": bad_id, "workspace": workspace, "title": "", "priority": "P9"}
    async with h.dead_letters("estimator") as letters:
        await h.publish_raw("task.created", json.dumps(bad).encode(), bad_id)
        letter = await h.next_item(letters, what="the dead letter")
    assert letter.subject == "task.created"
    assert "title" in letter.error and "priority" in letter.error
    assert json.loads(letter.payload)["task_id"] == bad_id
    assert letter.headers["Nats-Msg-Id"] == bad_id

    good = TaskCreated(task_id=f"task-{new_id()}", workspace=workspace, title="Fix typo in docs")
    assert (await estimated_for(h, good)).estimate.story_points in FIBONACCI
    assert await h.scalar(select(estimates.c.task_id).where(estimates.c.task_id == bad_id)) is None


async def test_estimates_cite_similar_tasks_from_imported_history(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("estimator", history_check_interval_s=0)
    task = TaskCreated(
        task_id=f"task-{new_id()}",
        workspace=workspace,
        title="Add OAuth login for Microsoft accounts",
        description="OAuth callback and login button",
    )
    assert (await estimated_for(h, task)).estimate.evidence == ()

    # History imported while the estimator runs is used for the next task.
    similar = {
        f"h-login-{i}": (title, description)
        for i, (title, description) in enumerate(
            [
                ("Add OAuth login with Google", "OAuth callback, token refresh, login button"),
                ("OAuth login for GitHub accounts", "OAuth flow and session login"),
                ("Login page with OAuth provider", "login form, OAuth redirect and callback"),
                ("Refresh OAuth tokens on login", "token refresh for OAuth login sessions"),
            ]
        )
    }
    unrelated = {
        f"h-typo-{i}": (title, "")
        for i, title in enumerate(
            ["Fix typo in README", "Fix typo in docs footer", "Typo in error message"]
        )
    }
    await h.execute(
        history_tasks.insert(),
        [
            {
                "workspace": workspace,
                "task_id": task_id,
                "title": title,
                "description": description,
                "story_points": 8 if task_id in similar else 1,
            }
            for task_id, (title, description) in {**similar, **unrelated}.items()
        ],
    )
    again = task.model_copy(update={"task_id": f"task-{new_id()}", "event_id": new_id()})
    est = (await estimated_for(h, again)).estimate

    cited = [e.task_id for e in est.evidence]
    assert cited and set(cited) <= set(similar)
    assert [e.similarity for e in est.evidence] == sorted(
        (e.similarity for e in est.evidence), reverse=True
    )
    assert est.story_points == 8
