"""What the envelope refuses, and why: versions it cannot read, ambiguous timestamps, and
text Postgres cannot store. Each refusal names the field, so the dead letter says it."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError

from services.reporter.orphans import run_state
from tally.errors import TransientError, ValidationFailed, is_permanent, is_unavailable
from tally.events import RunEvent, TaskCreated


def task(**fields: object) -> bytes:
    return json.dumps({"task_id": "t1", "title": "Add OAuth login", **fields}).encode()


@pytest.mark.parametrize("version", [0, 2, 99])
def test_a_schema_version_outside_the_supported_range_is_refused(version: int) -> None:
    with pytest.raises(ValidationFailed, match="schema_version"):
        TaskCreated.parse(task(schema_version=version))


def test_the_supported_schema_version_is_read() -> None:
    assert TaskCreated.parse(task(schema_version=1)).schema_version == 1


def test_a_numeric_timestamp_is_refused_naming_the_field() -> None:
    payload = {"run_id": "r", "at": 12345, "detail": {"kind": "phase_start", "phase": "p"}}
    with pytest.raises(ValidationFailed, match=r"RunEvent\.at: .*ISO-8601"):
        RunEvent.parse(json.dumps(payload))


def test_an_iso_timestamp_is_read() -> None:
    payload = {
        "run_id": "r",
        "at": "2026-03-02T09:00:00Z",
        "detail": {"kind": "phase_start", "phase": "p"},
    }
    assert RunEvent.parse(json.dumps(payload)).at == datetime(2026, 3, 2, 9, tzinfo=UTC)


TIMESTAMP_TEXTS = [
    "2026-03-02T09:00:00Z",
    "2026-03-02T09:00:00.123456+02:00",
    "2026-03-02 09:00:00",
    "2026-03-02",
    "2026-03-02T09:00:00+0200",
    "1772442000",
    " 2026-03-02T09:00:00Z",
    "2026-13-02T09:00:00Z",
    "yesterday",
]


@pytest.mark.parametrize("text", TIMESTAMP_TEXTS)
def test_timestamp_text_reads_as_pydantic_reads_a_datetime(text: str) -> None:
    reference = TypeAdapter(datetime)
    payload = {"run_id": "r", "at": text, "detail": {"kind": "phase_start", "phase": "p"}}
    try:
        expected = reference.validate_python(text)
    except ValidationError:
        with pytest.raises(ValidationFailed, match=r"RunEvent\.at: "):
            RunEvent.parse(json.dumps(payload))
    else:
        assert RunEvent.parse(json.dumps(payload)).at == expected
        assert RunEvent.model_validate(payload).at == expected


@pytest.mark.parametrize("value", [12345, 1.5e9])
@pytest.mark.parametrize(
    ("where", "named"),
    [
        ("at", "at"),
        ("occurred_at", "occurred_at"),
        ("detail.started_at", "detail.worker_call.started_at"),
    ],
)
def test_a_number_is_refused_as_a_timestamp_from_json_and_from_python(
    value: object, where: str, named: str
) -> None:
    payload: dict[str, Any] = {
        "run_id": "r",
        "at": "2026-03-02T09:00:00Z",
        "detail": {"kind": "worker_call", "model": "m"},
    }
    target, _, key = where.rpartition(".")
    (payload[target] if target else payload)[key] = value
    with pytest.raises(ValidationFailed, match=rf"RunEvent\.{named}: .*ISO-8601"):
        RunEvent.parse(json.dumps(payload))
    with pytest.raises(ValidationError, match="ISO-8601"):
        RunEvent.model_validate(payload)


def test_a_boolean_is_refused_as_a_timestamp() -> None:
    payload = {"run_id": "r", "at": True, "detail": {"kind": "phase_start", "phase": "p"}}
    with pytest.raises(ValidationFailed, match=r"RunEvent\.at: "):
        RunEvent.parse(json.dumps(payload))


def test_a_nul_character_is_refused_naming_where_it_is() -> None:
    with pytest.raises(ValidationFailed, match=r"TaskCreated\.labels\.1: .*NUL"):
        TaskCreated.parse(task(labels=["ok", "bad\u0000"]))


def test_a_literal_backslash_u0000_is_not_a_nul() -> None:
    assert TaskCreated.parse(task(title="escape \\u0000 in docs")).title == "escape \\u0000 in docs"


def test_postgres_data_errors_are_permanent_and_connection_errors_are_not() -> None:
    refused = asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape")
    wrapped = DBAPIError("INSERT …", {}, refused)
    assert is_permanent(refused) and is_permanent(wrapped)
    assert not is_permanent(ConnectionResetError()) and not is_permanent(TransientError("x"))
    assert is_permanent(ValidationFailed("x"))


def test_a_server_that_cannot_be_reached_is_unavailable_and_bad_data_is_not() -> None:
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    gone = asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")
    assert is_unavailable(ConnectionRefusedError(111, "Connect call failed"))
    assert is_unavailable(DBAPIError("COPY", {}, starting))
    assert is_unavailable(DBAPIError("COPY", {}, gone))
    assert is_unavailable(redis.exceptions.ConnectionError("Error 111 connecting"))
    assert is_unavailable(redis.exceptions.TimeoutError("Timeout reading from socket"))
    assert not is_unavailable(redis.exceptions.ResponseError("WRONGTYPE"))
    refused = asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape")
    assert not is_unavailable(DBAPIError("INSERT …", {}, refused))
    assert not is_unavailable(ValueError("x")) and not is_unavailable(ValidationFailed("x"))


def test_a_run_with_events_and_no_start_becomes_an_orphan_after_the_window() -> None:
    now = datetime(2026, 3, 2, 12, tzinfo=UTC)
    window = timedelta(minutes=10)
    assert run_state(None, now - timedelta(minutes=2), now, window) == "waiting_for_start"
    assert run_state(None, now - timedelta(minutes=11), now, window) == "orphan"
    assert run_state({"finished_at": None}, now - timedelta(days=1), now, window) == "in_progress"
    assert run_state({"finished_at": now}, now, now, window) == "finished"
