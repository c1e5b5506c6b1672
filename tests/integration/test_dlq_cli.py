"""``tally dlq``: every dead letter reachable, newest first, filtered; and replayed.

Against real NATS (and the estimator, for a replay it then handles). The CLI runs through
typer's runner in a thread on the test's namespace.
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner, Result

from tally.cli.main import app as tally_cli
from tally.events import DeadLetter, TaskCreated, TaskEstimated, new_id, utcnow

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def cli(h: Harness, *args: str) -> Result:
    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.settings.namespace,
        "TALLY_TIMEOUT_S": "5",
    }
    return await asyncio.to_thread(CliRunner().invoke, tally_cli, ["dlq", *args], env=env)


def json_out(result: Result) -> Any:
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("["))
    return json.loads("\n".join(lines[start:]))


async def dead_letter(h: Harness, service: str, error: str, *, days_ago: float = 0) -> None:
    letter = DeadLetter(
        service=service,
        subject="run.event",
        error=error,
        error_type="ValidationFailed",
        failed_at=utcnow() - timedelta(days=days_ago),
        payload="{}",
        headers={"Nats-Msg-Id": new_id()},
    )
    await h.client.js.publish(h.catalog.dlq(service), letter.model_dump_json().encode())


async def test_more_than_a_thousand_dead_letters_page_newest_first(harness: Harness) -> None:
    h = harness
    for i in range(1_005):
        await dead_letter(h, "tracker", f"bad #{i}")

    newest = json_out(await cli(h, "--limit", "5", "--json"))
    assert [x["error"] for x in newest] == [f"bad #{i}" for i in range(1_004, 999, -1)]
    assert [x["id"] for x in newest] == sorted((x["id"] for x in newest), reverse=True)

    page = await cli(h, "--limit", "5")
    assert page.exit_code == 0, page.output
    assert f"more: tally dlq --before {newest[-1]['id']}" in page.stdout
    following = json_out(await cli(h, "--limit", "5", "--before", str(newest[-1]["id"]), "--json"))
    assert [x["error"] for x in following] == [f"bad #{i}" for i in range(999, 994, -1)]
    everything = json_out(await cli(h, "--limit", "0", "--oldest-first", "--json"))
    assert [x["error"] for x in everything] == [f"bad #{i}" for i in range(1_005)]


async def test_since_and_service_narrow_the_list(harness: Harness) -> None:
    h = harness
    await dead_letter(h, "estimator", "old estimator letter", days_ago=3)
    await dead_letter(h, "estimator", "new estimator letter")
    await dead_letter(h, "tracker", "new tracker letter")

    shown = json_out(await cli(h, "--service", "estimator", "--since", "1d", "--json"))
    assert [x["error"] for x in shown] == ["new estimator letter"]
    both = json_out(await cli(h, "--service", "estimator", "--json"))
    assert [x["error"] for x in both] == ["new estimator letter", "old estimator letter"]
    recent = json_out(await cli(h, "--since", "1d", "--json"))
    assert [x["error"] for x in recent] == ["new tracker letter", "new estimator letter"]

    bad = await cli(h, "--since", "yesterday")
    assert bad.exit_code == 2
    assert "--since" in bad.output


async def test_a_fixed_dead_letter_replays_to_its_subject_and_is_handled(
    harness: Harness, workspace: str, tmp_path: Path
) -> None:
    h = harness
    await h.start("estimator")
    task_id = f"task-{new_id()}"
    bad = {"task_id": task_id, "workspace": workspace, "title": ""}
    async with h.dead_letters("estimator") as letters:
        await h.client.js.publish(
            h.catalog.subject("task.created"),
            json.dumps(bad).encode(),
            headers={"Nats-Msg-Id": task_id, "X-Agent": "agent-7"},
        )
        await h.next_item(letters, what="the dead letter")
    [listed] = json_out(await cli(h, "--service", "estimator", "--json"))
    assert listed["subject"] == "task.created" and "title" in listed["error"]

    fixed = tmp_path / "fixed.json"
    fixed.write_text(
        TaskCreated(task_id=task_id, workspace=workspace, title="Fix typo in docs")
        .to_json()
        .decode()
    )
    seen: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_msg(msg: Msg) -> None:
        seen.put_nowait(msg)

    sub = await h.client.nc.subscribe(h.catalog.subject("task.created"), cb=on_msg)
    try:
        async with h.client.watch(TaskEstimated, lambda e: e.task_id == task_id) as estimated:
            replayed = await cli(h, "replay", str(listed["id"]), "--payload", str(fixed))
            assert replayed.exit_code == 0, replayed.output
            assert f"#{listed['id']} estimator task.created: republished" in replayed.stdout
            got = await h.next_item(estimated, what="the estimate of the replayed task")
        msg = await h.next_item(seen, what="the replayed message")
    finally:
        await sub.unsubscribe()
    assert got.estimate.title == "Fix typo in docs"
    assert msg.headers is not None and msg.headers["X-Agent"] == "agent-7"

    # Replaying the same letter with the same fix again publishes nothing new.
    again = await cli(h, "replay", str(listed["id"]), "--payload", str(fixed), "--json")
    assert json_out(again)[0]["duplicate"] is True

    missing = await cli(h, "replay", "999999")
    assert missing.exit_code == 2
    assert "no dead letter with id 999999" in missing.output
