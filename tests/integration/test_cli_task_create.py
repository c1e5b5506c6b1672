"""``tally task create``: the task id is always printed, and a retry creates nothing new."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner, Result

from tally.cli.main import app
from tally.events import TaskCreated, new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def cli(h: Harness, *args: str) -> Result:
    env = {"TALLY_NATS_URL": h.settings.nats_url, "TALLY_NAMESPACE": h.settings.namespace}
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_a_slow_estimator_still_prints_the_task_id_and_a_retry_is_a_no_op(
    harness: Harness,
) -> None:
    h = harness  # no estimator running: the task is published, nobody answers
    task_id = f"T-{new_id()[:10]}"
    async with h.client.watch(TaskCreated, lambda e: e.task_id == task_id) as published:
        first = await cli(
            h, "task", "create", "Add OAuth login", "--id", task_id, "--json", "--timeout", "0.5"
        )
        assert first.exit_code == 1
        body = json.loads(first.stdout)
        assert body["task_id"] == task_id and body["duplicate"] is False
        assert "estimator did not answer within 0.5s" in body["error"]
        assert (await h.next_item(published, what="task.created")).task_id == task_id

        again = await cli(h, "task", "create", "Add OAuth login", "--id", task_id, "--json")
        assert again.exit_code == 0, again.output
        retry = json.loads(again.stdout)
        assert (retry["task_id"], retry["duplicate"]) == (task_id, True)
        assert retry["event_id"] == body["event_id"]

        key = f"job-{new_id()[:8]}"
        keyed_args = ["task", "create", "Fix login", "--idempotency-key", key, "--json"]
        keyed = [json.loads((await cli(h, *keyed_args, "--timeout", "0.2")).stdout)]
        keyed.append(json.loads((await cli(h, *keyed_args)).stdout))
        assert keyed[0]["task_id"] == keyed[1]["task_id"]
        assert [k["duplicate"] for k in keyed] == [False, True]
    stream = h.catalog.stream_for("task.created")
    info = await h.client.js.stream_info(stream)
    assert info.state.messages == 2  # one per task, the retries dropped as duplicates
