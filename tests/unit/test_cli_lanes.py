"""``tally lanes``: the reporter's ``/lanes`` answer as readable tables, or as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from tally.cli import lanes as lanes_cli
from tally.cli.lanes import etas_table, hours_text, lanes_table
from tally.cli.main import app


def lane(count: int, p50: float | None, p85: float | None, wip: int) -> dict[str, Any]:
    return {
        "count": count,
        "mean_hours": p50,
        "p50_hours": p50,
        "p85_hours": p85,
        "total_hours": (p50 or 0.0) * count,
        "wip": wip,
        "wip_hours": 1.0 * wip,
    }


def eta(task_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "title": None,
        "lane": "work",
        "blocked": False,
        "spent_hours": 1.0,
        "wip_ahead": 0,
        "queue_hours": 0.0,
        "remaining_in_lane_hours": 1.0,
        "downstream_hours": 2.0,
        "eta_hours": 3.0,
        "eta_at": "2026-03-02T22:00:00+00:00",
        "overdue": False,
        **fields,
    }


BODY = {
    "workspace": "acme",
    "since": "2026-02-01T09:00:00+00:00",
    "now": "2026-03-02T19:00:00+00:00",
    "lanes": {
        "work": lane(3, 2.0, 2.7, 1),
        "review": lane(2, 0.75, 0.93, 1),
        "qa": lane(2, 1.25, 1.78, 0),
        "blocked": lane(0, None, None, 1),
    },
    "etas": [
        eta("T-1", title="Add OAuth login", lane="review", spent_hours=60.0, overdue=True),
        eta("T-2", blocked=True, wip_ahead=2),
        eta("T-3", eta_hours=None, eta_at=None),
    ],
}


def text(table: Any) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_hours_read_as_minutes_hours_then_days() -> None:
    got = [hours_text(h) for h in (0.0, 0.75, 1.0, 47.9, 48.0, None)]
    assert got == ["0m", "45m", "1.0h", "47.9h", "2.0d", "—"]


def cells(table: Any) -> dict[str, list[str]]:
    """The rendered table's rows by their first cell."""
    rows = [line.split("│")[1:-1] for line in text(table).splitlines() if line.startswith("│")]
    return {row[0].strip(): [c.strip() for c in row[1:]] for row in rows}


def test_the_lanes_table_has_a_row_per_lane_with_its_numbers() -> None:
    rows = cells(lanes_table(BODY))
    assert list(rows) == ["work", "review", "qa", "blocked"]
    assert rows["work"] == ["3", "2.0h", "2.0h", "2.7h", "1", "1.0h"]
    assert rows["review"][2:4] == ["45m", "56m"]
    assert rows["blocked"] == ["0", "—", "—", "—", "1", "1.0h"]


def test_the_eta_table_shows_overdue_blocked_and_unknown() -> None:
    out = text(etas_table(BODY))
    t1, t2, t3 = (
        next(line for line in out.splitlines() if t in line) for t in ("T-1", "T-2", "T-3")
    )
    assert "Add OAuth login" in t1 and "2.5d overdue" in t1 and "2026-03-02 22:00" in t1
    assert "work (blocked)" in t2
    assert "—" in t3 and "no history yet" in t3


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, str] | None]]:
    """The reporter calls the command makes; each answers ``BODY``."""
    calls: list[tuple[str, dict[str, str] | None]] = []

    def fake_get(path: str, params: dict[str, str | None] | None = None) -> Any:
        # What reaches the reporter: options not given are left out, as reporter_get does.
        sent = {k: v for k, v in params.items() if v is not None} if params else None
        calls.append((path, sent))
        return BODY

    monkeypatch.setattr(lanes_cli, "reporter_get", fake_get)
    return calls


def test_the_command_asks_the_reporter_and_prints_its_json(asked: list[Any]) -> None:
    result = CliRunner().invoke(app, ["lanes", "--workspace", "acme", "--since", "2w", "--json"])
    assert result.exit_code == 0, result.output
    assert asked == [("/lanes", {"since": "2w", "workspace": "acme"})]
    assert json.loads(result.output) == BODY


def test_the_command_prints_both_tables(asked: list[Any]) -> None:
    result = CliRunner().invoke(app, ["lanes"])
    assert result.exit_code == 0, result.output
    assert asked == [("/lanes", {"since": "30d"})]
    assert "review" in result.output and "T-2" in result.output


def test_the_command_says_when_more_tasks_are_open_than_shown(
    asked: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BODY, "etas_total", 1121)
    result = CliRunner().invoke(app, ["lanes", "--limit", "3"])
    assert result.exit_code == 0, result.output
    assert asked == [("/lanes", {"since": "30d", "limit": "3"})]
    assert "the 3 due soonest of 1,121 open tasks" in result.output
