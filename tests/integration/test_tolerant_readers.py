"""A newer publisher against a running service: extra fields are processed, a newer
schema version is dead-lettered with the reason."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select

from tally.db.tables import tasks
from tally.events import new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def created(task_id: str, workspace: str, **fields: object) -> dict[str, object]:
    return {
        "event_id": new_id(),
        "task_id": task_id,
        "title": "Add OAuth login",
        "workspace": workspace,
        **fields,
    }


async def test_a_message_with_an_extra_field_is_processed(harness: Harness) -> None:
    h = harness
    await h.start("tracker")
    ws, task_id = f"ws-{new_id()[:8]}", f"T-{new_id()[:8]}"
    body = created(task_id, ws, from_the_future=True, subtasks=[{"title": "a", "size": "S"}])
    await h.publish_raw("task.created", json.dumps(body).encode(), str(body["event_id"]))

    async def stored() -> int:
        stmt = select(func.count()).select_from(tasks).where(tasks.c.task_id == task_id)
        return int(await h.scalar(stmt))

    assert await h.eventually(stored, what="the task with an extra field to be stored") == 1


async def test_a_newer_schema_version_is_dead_lettered_with_the_reason(harness: Harness) -> None:
    h = harness
    await h.start("tracker")
    body = created(f"T-{new_id()[:8]}", "default", schema_version=2)
    async with h.dead_letters("tracker") as letters:
        await h.publish_raw("task.created", json.dumps(body).encode(), str(body["event_id"]))
        letter = await h.next_item(letters, what="the dead letter of a version-2 message")
    assert letter.subject == "task.created"
    assert "schema_version 2 is newer than this Tally reads" in letter.error
    assert json.loads(letter.payload)["event_id"] == body["event_id"]
