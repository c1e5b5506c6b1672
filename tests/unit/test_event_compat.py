"""Tolerant readers, strict writers: what a newer publisher may add without breaking us."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tally.errors import ValidationFailed
from tally.events import RunEvent, TaskCreated


def test_unknown_fields_on_the_bus_are_ignored_at_any_depth() -> None:
    payload = {
        "task_id": "t1",
        "title": "Add OAuth login",
        "added_in_a_later_release": {"x": 1},
        "subtasks": [{"title": "callback", "effort": "small"}],
    }
    event = TaskCreated.parse(json.dumps(payload))
    assert event.task_id == "t1"
    assert event.subtasks[0].title == "callback"


def test_unknown_fields_inside_a_run_event_detail_are_ignored() -> None:
    payload = {
        "run_id": "r1",
        "at": "2026-03-02T09:00:00Z",
        "detail": {"kind": "verification", "command": "pytest", "passed": True, "flaky": False},
    }
    assert RunEvent.parse(json.dumps(payload)).detail.kind == "verification"


def test_building_an_event_in_python_still_refuses_an_unknown_field() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        TaskCreated(task_id="t1", title="x", titel="typo")  # type: ignore[call-arg]


def test_a_newer_schema_version_is_refused_with_the_reason() -> None:
    payload = {"task_id": "t1", "title": "x", "schema_version": 2}
    with pytest.raises(ValidationFailed, match=r"schema_version 2 is newer than this Tally reads"):
        TaskCreated.parse(json.dumps(payload))
