"""The task lifecycle from every client: an SDK run moves its task through the lanes, and
``tally task status`` moves it by hand; ``/lanes`` (what ``tally lanes`` prints) follows."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

import tally
from tally.cli.main import app as cli
from tally.db.tables import tasks
from tally.events import TaskCreated, TaskStatusChanged, new_id
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def lanes(reporter: Any, workspace: str) -> dict[str, Any]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        response = await http.get("/lanes", params={"workspace": workspace, "since": "1d"})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_an_sdk_run_and_the_cli_move_a_task_through_the_lanes(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    await h.start("tracker")
    reporter = await h.start("reporter")
    task_id = f"T-{new_id()[:10]}"
    await h.client.publish(TaskCreated(task_id=task_id, title="Add OAuth login", workspace=ws))

    async with (
        tally.connect(h.settings.nats_url, workspace=ws, namespace=h.catalog.namespace) as t,
        t.run(task_id, model="claude-sonnet-4") as run,
    ):
        await run.note("working")
    await h.drained("tracker", "task.status_changed")

    async def status() -> str:
        return str(await h.scalar(select(tasks.c.status).where(tasks.c.task_id == task_id)))

    assert await h.eventually(
        lambda: _is(status, "ready_to_review"), what="the SDK run to move its task"
    )
    body = await lanes(reporter, ws)
    assert body["lanes"]["work"]["count"] == 1  # in_progress -> ready_to_review: a work time
    assert body["lanes"]["review"]["wip"] == 1
    assert [e["task_id"] for e in body["etas"]] == [task_id]

    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.catalog.namespace,
        "TALLY_WORKSPACE": ws,
    }
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["task", "status", task_id, "ready_to_qa", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    await h.eventually(lambda: _is(status, "ready_to_qa"), what="tally task status to move it")
    await h.drained("tracker", "task.status_changed")
    body = await lanes(reporter, ws)
    assert body["lanes"]["review"]["count"] == 1
    assert (body["lanes"]["review"]["wip"], body["lanes"]["qa"]["wip"]) == (0, 1)


async def _is(read: Any, expected: str) -> bool:
    return bool(await read() == expected)


async def test_a_failed_run_leaves_its_task_in_progress_and_lanes_none_moves_nothing(
    harness: Harness, workspace: str
) -> None:
    h, ws = harness, workspace
    seen: list[TaskStatusChanged] = []
    failed, quiet = f"T-{new_id()[:10]}", f"T-{new_id()[:10]}"
    async with h.client.watch(TaskStatusChanged, lambda e: e.workspace == ws) as queue:
        async with tally.connect(
            h.settings.nats_url, workspace=ws, namespace=h.catalog.namespace
        ) as t:
            with pytest.raises(RuntimeError):
                async with t.run(failed):
                    raise RuntimeError("the agent crashed")
            async with t.run(quiet, lanes=None):
                pass
            await t.task(quiet).status("blocked", reason="waiting on a review")
        for _ in range(2):
            seen.append(await h.next_item(queue, what="a status change"))
    assert [(e.task_id, e.to_status) for e in seen] == [
        (failed, "in_progress"),
        (quiet, "blocked"),
    ]
    assert seen[1].metadata == {"reason": "waiting on a review"}
    assert queue.empty()
