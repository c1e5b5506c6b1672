"""The reporter's export: filtered keyset pages of the tracker's tables, as JSON and CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import insert

from services.reporter.export import encode_cursor
from tally.db.tables import runs, task_status_events, tasks, token_usage
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MODELS = ("claude-sonnet-4", "gpt-5", "gemini-2.5-pro")
CALLS = 1_203


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def usage_rows(workspace: str, n: int = CALLS) -> list[dict[str, Any]]:
    """``n`` worker calls, three to a second, their ids descending within each second.

    Rows of one time come back in id order, so the order of a page is not the order of
    insertion, and a page boundary can fall between calls of the same second.
    """
    return [
        {
            "event_id": f"{workspace}-call-{n - i:05d}",
            "run_id": f"{workspace}-run-{i % 4}",
            "workspace": workspace,
            "model": MODELS[i % 3],
            "input_tokens": 1_000 + i,
            "output_tokens": i % 7,
            "at": at(i // 3),
        }
        for i in range(n)
    ]


def in_order(rows: list[dict[str, Any]]) -> list[str]:
    return [r["event_id"] for r in sorted(rows, key=lambda r: (r["at"], r["event_id"]))]


@pytest.fixture
async def http(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    reporter = await harness.start("reporter")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as client:
        yield client


async def pages(
    http: httpx.AsyncClient, kind: str, **params: Any
) -> list[tuple[list[dict[str, Any]], str | None]]:
    """Every page of ``/export/{kind}``, following ``next_cursor`` to the end."""
    found: list[tuple[list[dict[str, Any]], str | None]] = []
    cursor = None
    while True:
        resp = await http.get(f"/export/{kind}", params={**params, "cursor": cursor or ""})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        found.append((body["rows"], body["next_cursor"]))
        cursor = body["next_cursor"]
        if cursor is None:
            return found


async def test_token_usage_comes_back_once_each_in_order_across_pages(
    harness: Harness, http: httpx.AsyncClient, workspace: str
) -> None:
    rows = usage_rows(workspace)
    await harness.execute(insert(token_usage), rows)
    await harness.execute(insert(token_usage), usage_rows(f"{workspace}-other", 10))

    got = await pages(http, "token_usage", workspace=workspace, limit=500)

    assert [len(page) for page, _ in got] == [500, 500, 203]
    assert [cursor is None for _, cursor in got] == [False, False, True]
    ids = [r["event_id"] for page, _ in got for r in page]
    assert ids == in_order(rows)
    first = got[0][0][0]
    assert first["at"] == T0.isoformat() and first["workspace"] == workspace
    assert first["input_tokens"] == 1_002  # the third call of second 0 has the lowest id


async def test_filters_narrow_the_rows(
    harness: Harness, http: httpx.AsyncClient, workspace: str
) -> None:
    rows = usage_rows(workspace)
    await harness.execute(insert(token_usage), rows)

    async def ids(**params: Any) -> list[str]:
        got = await pages(http, "token_usage", workspace=workspace, limit=5_000, **params)
        return [r["event_id"] for page, _ in got for r in page]

    assert await ids(model="gpt-5") == in_order([r for r in rows if r["model"] == "gpt-5"])
    window = await ids(since=at(100).isoformat(), until=at(200).isoformat())
    assert window == in_order([r for r in rows if at(100) <= r["at"] < at(200)])
    assert len(window) == 300
    run_1 = f"{workspace}-run-1"
    both = await ids(run_id=run_1, model="claude-sonnet-4")
    assert both == in_order([r for r in rows if r["run_id"] == run_1 and r["model"] == MODELS[0]])
    assert 0 < len(both) < CALLS // 4
    assert await ids(model="no-such-model") == []


async def test_csv_pages_carry_the_header_and_the_same_rows(
    harness: Harness, http: httpx.AsyncClient, workspace: str
) -> None:
    rows = usage_rows(workspace)
    await harness.execute(insert(token_usage), rows)

    records: list[dict[str, str]] = []
    cursors: list[str | None] = []
    cursor = ""
    while True:
        params = {"workspace": workspace, "limit": 500, "format": "csv", "cursor": cursor}
        resp = await http.get("/export/token_usage", params=params)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/csv")
        reader = csv.DictReader(io.StringIO(resp.text))
        assert reader.fieldnames == [c.name for c in token_usage.columns]
        records.extend(reader)
        cursor = resp.headers.get("X-Next-Cursor", "")
        cursors.append(cursor or None)
        if not cursor:
            break

    assert len(cursors) == 3 and cursors[-1] is None
    assert [r["event_id"] for r in records] == in_order(rows)
    by_id = {r["event_id"]: r for r in rows}
    for record in records[:5]:
        row = by_id[record["event_id"]]
        assert record["model"] == row["model"]
        assert int(record["input_tokens"]) == row["input_tokens"]
        assert datetime.fromisoformat(record["at"]) == row["at"]
        assert record["cost_micros"] == "" and record["metadata"] == "{}"
        assert record["cost_known"] == "true"
        assert record["estimated"] == "false"


async def test_runs_tasks_and_status_changes_export_with_their_own_filters(
    harness: Harness, http: httpx.AsyncClient, workspace: str
) -> None:
    w = workspace
    await harness.execute(
        insert(tasks),
        [
            {"task_id": f"{w}-t{i}", "workspace": w, "title": f"task {i}", "priority": "P2",
             "status": status, "model": model, "event_id": f"{w}-te{i}", "created_at": at(i)}
            for i, (status, model) in enumerate(
                [("completed", "gpt-5"), ("in_progress", "gpt-5"), ("completed", "claude")]
            )
        ],
    )  # fmt: skip
    await harness.execute(
        insert(runs),
        [
            {"run_id": f"{w}-r1", "workspace": w, "task_id": f"{w}-t0", "model": "gpt-5",
             "outcome": "complete", "started_at": at(60)},
            {"run_id": f"{w}-r2", "workspace": w, "task_id": f"{w}-t1", "model": "gpt-5",
             "outcome": "error", "started_at": at(30)},
            {"run_id": f"{w}-r3", "workspace": w, "task_id": f"{w}-t0", "model": "claude",
             "outcome": "complete", "started_at": at(90)},
        ],
    )  # fmt: skip
    await harness.execute(
        insert(task_status_events),
        [
            {"event_id": f"{w}-s{i}", "task_id": f"{w}-t0", "workspace": w, "from_status": a,
             "to_status": b, "changed_at": at(100 + i), "task_run_id": f"{w}-r{1 + i % 2}"}
            for i, (a, b) in enumerate(
                [("backlog", "in_progress"), ("in_progress", "ready_to_review"),
                 ("ready_to_review", "in_progress"), ("in_progress", "ready_to_review")]
            )
        ],
    )  # fmt: skip

    async def ids(kind: str, key: str, **params: Any) -> list[str]:
        got = await pages(http, kind, workspace=w, limit=2, **params)
        return [r[key] for page, _ in got for r in page]

    # Runs come by start time, not by id or insertion.
    assert await ids("runs", "run_id") == [f"{w}-r2", f"{w}-r1", f"{w}-r3"]
    assert await ids("runs", "run_id", outcome="complete") == [f"{w}-r1", f"{w}-r3"]
    assert await ids("runs", "run_id", task_id=f"{w}-t0", model="claude") == [f"{w}-r3"]
    assert await ids("runs", "run_id", since=at(45).isoformat()) == [f"{w}-r1", f"{w}-r3"]
    assert await ids("tasks", "task_id", status="completed") == [f"{w}-t0", f"{w}-t2"]
    assert await ids("tasks", "task_id", model="gpt-5", until=at(1).isoformat()) == [f"{w}-t0"]
    reviews = await ids("status_events", "event_id", status="ready_to_review")
    assert reviews == [f"{w}-s1", f"{w}-s3"]
    assert await ids("status_events", "event_id", run_id=f"{w}-r2") == [f"{w}-s1", f"{w}-s3"]


async def test_bad_requests_are_refused_naming_the_parameter(
    harness: Harness, http: httpx.AsyncClient, workspace: str
) -> None:
    await harness.execute(insert(token_usage), usage_rows(workspace, 3))
    runs_cursor = encode_cursor("runs", T0, f"{workspace}-r1")
    cases = {
        "/export/token_usage?limit=0": "limit",
        "/export/token_usage?limit=10001": "limit",
        "/export/token_usage?limit=ten": "limit",
        "/export/bogus": "kind",
        "/export/token_usage?outcome=complete": "outcome",
        "/export/status_events?model=gpt-5": "model",
        "/export/token_usage?colour=red": "colour",
        "/export/token_usage?cursor=not-a-cursor": "cursor",
        f"/export/tasks?cursor={runs_cursor}": "cursor",
        "/export/token_usage?since=yesterday": "since",
        "/export/token_usage?until=soon": "until",
        "/export/token_usage?format=xml": "format",
    }
    for path, name in cases.items():
        resp = await http.get(path)
        assert resp.status_code == 400, path
        error = resp.json()["error"]
        assert error["field"] == name and error["message"].startswith(f"{name}:"), (path, error)
    # The largest page is allowed.
    ok = await http.get("/export/token_usage", params={"limit": 10_000, "workspace": workspace})
    assert ok.status_code == 200 and len(ok.json()["rows"]) == 3
