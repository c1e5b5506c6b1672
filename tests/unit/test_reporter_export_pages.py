"""Export's pure parts: cursors, CSV, parameter checks, and the CLI following pages."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from services.reporter.export import (
    DEFAULT_LIMIT,
    decode_cursor,
    encode_cursor,
    parse_query,
    render_csv,
)
from tally.cli import export as export_cli
from tally.cli.main import app

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
runner = CliRunner()


def test_a_cursor_round_trips_and_is_url_safe() -> None:
    at = datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    cursor = encode_cursor("token_usage", at, "call/+ 1")
    assert decode_cursor("token_usage", cursor) == (at, "call/+ 1")
    assert cursor.replace("-", "").replace("_", "").isalnum()


@pytest.mark.parametrize(
    "cursor",
    ["", "not-a-cursor", "!!!", encode_cursor("runs", NOW, "r1")],
)
def test_a_cursor_not_given_out_for_this_kind_is_refused(cursor: str) -> None:
    with pytest.raises(ValueError, match=r"^cursor: not a cursor of /export/tasks"):
        decode_cursor("tasks", cursor)


def test_csv_has_a_header_and_one_line_per_row_with_plain_cells() -> None:
    rows = [
        {"id": "a", "at": NOW, "n": 3, "ok": True, "meta": {"k": [1, 2]}, "note": None},
        {"id": "b", "at": NOW, "n": 0, "ok": False, "meta": {}, "note": 'says "hi",\nthen'},
    ]
    text = render_csv(["id", "at", "n", "ok", "meta", "note"], rows)
    assert text.splitlines()[0] == "id,at,n,ok,meta,note"
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert parsed[0] == {
        "id": "a",
        "at": NOW.isoformat(),
        "n": "3",
        "ok": "true",
        "meta": '{"k":[1,2]}',
        "note": "",
    }
    assert parsed[1]["note"] == 'says "hi",\nthen' and parsed[1]["ok"] == "false"
    assert render_csv(["id", "n"], []) == "id,n\r\n"


def test_parameters_are_checked_and_empty_ones_ignored() -> None:
    query = parse_query(
        "token_usage", {"workspace": "acme", "since": "2d", "model": "", "cursor": ""}, NOW
    )
    assert query.filters == {"workspace": "acme"}
    assert query.since == NOW - timedelta(days=2) and query.until is None
    assert query.limit == DEFAULT_LIMIT and query.after is None and query.format == "json"
    cursor = encode_cursor("runs", NOW, "r9")
    query = parse_query("runs", {"outcome": "error", "cursor": cursor, "limit": "5000"}, NOW)
    assert query.after == (NOW, "r9") and query.limit == 5000
    assert query.filters == {"outcome": "error"}


@pytest.mark.parametrize(
    ("kind", "params", "named"),
    [
        ("logs", {}, "kind"),
        ("tasks", {"outcome": "complete"}, "outcome"),
        ("token_usage", {"status": "completed"}, "status"),
        ("runs", {"limit": "-1"}, "limit"),
        ("runs", {"limit": "10001"}, "limit"),
        ("runs", {"until": "tomorrow"}, "until"),
        ("runs", {"format": "xlsx"}, "format"),
    ],
)
def test_bad_parameters_are_named(kind: str, params: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=rf"^{named}:"):
        parse_query(kind, params, NOW)


ROWS = [{"event_id": f"e{i:02d}", "model": "m", "input_tokens": i} for i in range(7)]


def fake_reporter(requests: list[httpx.Request]) -> httpx.Client:
    """A reporter serving ``ROWS`` in pages, the cursor being the next row's index."""

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        params = request.url.params
        if params.get("model") == "bad":
            return httpx.Response(400, json={"error": "model: not a parameter of /export/x"})
        start, limit = int(params.get("cursor", "0")), int(params["limit"])
        page = ROWS[start : start + limit]
        cursor = str(start + limit) if start + limit < len(ROWS) else None
        if params["format"] == "csv":
            headers = {"X-Next-Cursor": cursor} if cursor else {}
            text = render_csv(["event_id", "model", "input_tokens"], page)
            return httpx.Response(200, text=text, headers={**headers, "content-type": "text/csv"})
        return httpx.Response(200, json={"rows": page, "next_cursor": cursor})

    return httpx.Client(transport=httpx.MockTransport(handle), base_url="http://t")


@pytest.fixture
def requests(monkeypatch: pytest.MonkeyPatch) -> list[httpx.Request]:
    seen: list[httpx.Request] = []
    monkeypatch.setattr(export_cli, "reporter_client", lambda: fake_reporter(seen))
    return seen


def test_the_cli_follows_every_page_to_the_end(requests: list[httpx.Request]) -> None:
    result = runner.invoke(app, ["export", "token_usage", "-w", "acme", "--page-size", "3"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == ROWS
    assert [r.url.params.get("cursor") for r in requests] == [None, "3", "6"]
    assert all(r.url.params["workspace"] == "acme" for r in requests)


def test_the_cli_streams_jsonl_and_csv_with_one_header(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    result = runner.invoke(app, ["export", "token_usage", "--format", "jsonl", "--page-size", "2"])
    assert [json.loads(line) for line in result.stdout.splitlines()] == ROWS
    out = tmp_path / "usage.csv"
    args = ["export", "token_usage", "--format", "csv", "--page-size", "4", "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "7 token_usage rows written" in result.stdout
    records: list[dict[str, Any]] = list(csv.DictReader(out.open(newline="")))
    assert [r["event_id"] for r in records] == [r["event_id"] for r in ROWS]
    assert out.read_text().count("event_id,model") == 1


def test_the_cli_names_bad_input_and_writes_no_file(
    requests: list[httpx.Request], tmp_path: Path
) -> None:
    out = tmp_path / "never.json"
    result = runner.invoke(app, ["export", "runs", "--model", "bad", "-o", str(out)])
    assert result.exit_code == 2 and "model:" in result.output
    assert not out.exists()
    result = runner.invoke(app, ["export", "runs", "--format", "xml"])
    assert result.exit_code == 2 and "--format" in result.output
