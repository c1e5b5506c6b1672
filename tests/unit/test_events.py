"""Event schemas: the envelope, validation messages that name fields, round trips."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from pydantic import ValidationError

from tally.errors import ValidationFailed
from tally.events import (
    MAX_PAYLOAD_BYTES,
    RunEvent,
    RunFinished,
    TaskCreated,
    TaskEstimated,
    utcnow,
)
from tally.events.tasks import MAX_DESCRIPTION_CHARS


def test_envelope_fields_are_filled_and_round_trip() -> None:
    task = TaskCreated(task_id="T-1", title="Add OAuth login", priority="P1", labels=("backend",))
    again = TaskCreated.parse(task.to_json())
    assert again == task
    assert len(task.event_id) == 32 and task.schema_version == 1
    assert task.occurred_at.tzinfo is not None


def test_validation_errors_name_every_bad_field() -> None:
    with pytest.raises(ValidationFailed) as exc:
        TaskCreated.parse(b'{"task_id": "T-1", "title": "", "priority": "P9"}')
    message = str(exc.value)
    assert "TaskCreated.title" in message and "TaskCreated.priority" in message


def test_unknown_fields_are_refused_when_we_build_an_event_so_typos_fail_loudly() -> None:
    # Strict writer; on the bus a reader ignores them (see test_event_compat.py).
    with pytest.raises(ValidationError, match="prority"):
        TaskCreated(task_id="T-1", title="x", prority="P1")  # type: ignore[call-arg]


def test_oversized_payloads_and_descriptions_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="bytes"):
        TaskCreated.parse(b" " * (MAX_PAYLOAD_BYTES + 1))
    body = json.dumps(
        {"task_id": "T", "title": "x", "description": "a" * (MAX_DESCRIPTION_CHARS + 1)}
    )
    with pytest.raises(ValidationFailed, match="description"):
        TaskCreated.parse(body)


def test_run_event_kinds_are_told_apart_and_unknown_kinds_refused() -> None:
    call = RunEvent.parse(
        json.dumps(
            {
                "run_id": "r",
                "at": "2026-11-20T09:00:00Z",
                "detail": {"kind": "worker_call", "usage": {"prompt_tokens": 3}},
            }
        )
    )
    assert call.detail.kind == "worker_call"
    with pytest.raises(ValidationFailed, match="detail"):
        RunEvent.parse('{"run_id": "r", "at": "2026-11-20T09:00:00Z", "detail": {"kind": "dance"}}')


def test_a_worker_call_cannot_finish_before_it_started() -> None:
    now = utcnow()
    body = {
        "run_id": "r",
        "at": now.isoformat(),
        "detail": {
            "kind": "worker_call",
            "started_at": now.isoformat(),
            "finished_at": (now - timedelta(seconds=1)).isoformat(),
        },
    }
    with pytest.raises(ValidationFailed, match="finished_at is before started_at"):
        RunEvent.parse(json.dumps(body))


def test_negative_counts_are_refused() -> None:
    with pytest.raises(ValidationFailed, match="lines_added"):
        RunEvent.parse(
            '{"run_id": "r", "at": "2026-11-20T09:00:00Z", '
            '"detail": {"kind": "changes", "lines_added": -3}}'
        )


def test_derived_events_keep_the_workspace_and_correlate_to_their_cause() -> None:
    task = TaskCreated(task_id="T-1", title="x", workspace="acme")
    finished = RunFinished(
        run_id="r",
        task_id="T-1",
        outcome="complete",
        success=True,
        finished_at=utcnow(),
        workspace="acme",
        correlation_id="corr-1",
    )
    assert (
        task.child(
            RunFinished,
            run_id="r",
            task_id="T-1",
            outcome="error",
            success=False,
            finished_at=utcnow(),
        ).correlation_id
        == task.event_id
    )
    child = finished.child(
        TaskEstimated,
        task_id="T-1",
        estimate={
            "title": "x",
            "priority": "P2",
            "task_type": "feature",
            "story_points": 3,
            "band": "simple",
            "hours_p50": 1,
            "hours_p90": 2,
            "value_score": 10,
            "tokens": {"input_tokens": 1, "output_tokens": 1},
        },
    )
    assert (child.workspace, child.correlation_id) == ("acme", "corr-1")
