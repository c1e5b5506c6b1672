"""The plan view: the team's own critical path beside Tally's; Assignee and Sprint used,
and no longer required."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tally.cli import plans as plans_cli
from tally.cli.main import app
from tally.cli.plans import plan_events, read_plan, team_critical_path

runner = CliRunner()


def task(task_id: str, deps: list[str], team: float | None, tally: int, status: str = "backlog"):
    return {
        "task_id": task_id,
        "title": task_id,
        "status": status,
        "dependencies": deps,
        "team_estimate": team,
        "story_points": tally,
        "hours_p50": 1.0,
        "hours_p90": 2.0,
        "velocity_source": "prior",
    }


TASKS = [
    task("p/a", [], 8, 3),
    task("p/b", [], 2, 13),
    task("p/c", ["p/a", "p/b"], 3, 5),
    task("p/d", [], 40, 21, status="completed"),  # done: on nobody's path
]


def test_the_team_path_follows_the_team_estimates_over_open_tasks() -> None:
    assert team_critical_path(TASKS) == (["p/a", "p/c"], 11.0)
    assert team_critical_path([]) == ([], 0.0)


def test_plan_show_prints_both_critical_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    view: dict[str, Any] = {
        "plan_id": "p",
        "tasks": TASKS,
        "totals": {
            "tasks": 4,
            "completed": 1,
            "pending_estimates": 0,
            "team_points": 53,
            "tally_points": 42,
        },
        "critical_path": {"tasks": ["p/b", "p/c"], "hours_p50": 2.0},
        "forecast_hours": {"p50": 2.0, "p85": 3.0, "p95": 4.0, "draws": 1000},
    }
    monkeypatch.setattr(plans_cli, "reporter_get", lambda *a, **k: json.loads(json.dumps(view)))
    out = runner.invoke(app, ["plan", "show", "p"]).output
    assert "critical path, Tally's  p/b -> p/c (2.0h P50, 18 points)" in out
    assert "critical path, team's   p/a -> p/c (11 points by the team, 8 by Tally)" in out
    doc = json.loads(runner.invoke(app, ["plan", "show", "p", "--json"]).stdout)
    assert doc["team_critical_path"] == {
        "tasks": ["p/a", "p/c"],
        "team_points": 11.0,
        "tally_points": 8,
    }


def test_a_plan_needs_only_id_and_title_and_keeps_assignee_and_sprint(tmp_path: Path) -> None:
    minimal = tmp_path / "minimal.csv"
    minimal.write_text("ID,Title\n1,Add login\n2,Add logout\n")
    assert [r.title for r in read_plan(minimal)] == ["Add login", "Add logout"]

    full = tmp_path / "full.csv"
    full.write_text(
        "ID,Title,Estimate,Assignee,Sprint,Dependencies\n1,Add login,3,ana,S1,\n2,Logout,,,,1\n"
    )
    events = plan_events("full", "acme", read_plan(full))
    assert events[0].labels == ("sprint:S1", "assignee:ana")
    assert events[1].labels == () and events[1].dependencies == ("full/1",)
