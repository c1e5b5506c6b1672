"""Plans: a whole file is refused on any bad row, naming it; the view's path and forecast."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.reporter.plans import plan_view
from tally.cli.csvfile import CsvError
from tally.cli.plans import find_cycle, plan_events, read_plan

HEADER = "ID,Title,Description,Estimate,Priority,Assignee,Dependencies,Sprint\n"


def write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "q3.csv"
    path.write_text(header + body, encoding="utf-8")
    return path


def test_a_valid_plan_becomes_tasks_with_dependencies_and_team_estimates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        'A,Design API,,3,P1,ana,,S1\nB,Build API,,8,P2,bo,A,S1\nC,Ship it,,2,p0,,"A, B",S2\n',
    )
    events = plan_events("q3", "ws", read_plan(path))
    assert [e.task_id for e in events] == ["q3/A", "q3/B", "q3/C"]
    assert events[2].dependencies == ("q3/A", "q3/B")
    assert [e.team_estimate for e in events] == [3, 8, 2]
    assert events[2].priority == "P0"
    assert events[0].labels == ("sprint:S1", "assignee:ana")
    assert {e.plan_id for e in events} == {"q3"}
    # Stable event ids: importing the same plan again is deduplicated by JetStream.
    assert [e.event_id for e in events] == [
        e.event_id for e in plan_events("q3", "ws", read_plan(path))
    ]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("A,,,3,P1,,,\n", "row 1, field title"),
        ("A,Ok,,3,P7,,,\n", "row 1, field priority"),
        ("A,Ok,,3,P1,,,\nB,Ok,,x,P1,,,\n", "row 2, field estimate"),
        ("A,Ok,,3,P1,,Z,\n", "row 1, field Dependencies: no task with ID 'Z'"),
        ("A,Ok,,3,P1,,,\nA,Again,,3,P1,,,\n", "row 2, field ID: 'A' repeats row 1"),
        ("A,Ok,,1,P1,,C,\nB,Ok,,1,P1,,A,\nC,Ok,,1,P1,,B,\n", "dependency cycle A -> C -> B -> A"),
    ],
)
def test_a_bad_plan_is_refused_naming_row_and_field(
    tmp_path: Path, body: str, expected: str
) -> None:
    with pytest.raises(CsvError) as err:
        read_plan(write(tmp_path, body))
    assert expected in str(err.value)


def test_a_description_over_100_kb_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="row 1, field description"):
        read_plan(write(tmp_path, f"A,Ok,{'x' * 100_001},3,P1,,,\n"))


def test_missing_columns_are_named(tmp_path: Path) -> None:
    # Only ID and Title are required (see test_cli_plans.py for the optional ones).
    with pytest.raises(CsvError, match="missing columns: Title"):
        read_plan(
            write(
                tmp_path,
                "A,,3,P1,\n",
                header="ID,Description,Estimate,Priority,Assignee\n",
            )
        )


def test_find_cycle_returns_none_for_a_dag_and_the_loop_otherwise() -> None:
    assert find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    assert find_cycle({"a": ["a"]}) == ["a", "a"]


def row(
    task_id: str, p50: float | None, deps: tuple[str, ...] = (), status: str = "backlog"
) -> dict:
    return {
        "task_id": task_id,
        "title": task_id,
        "status": status,
        "dependencies": list(deps),
        "team_estimate": 3.0,
        "story_points": 5 if p50 is not None else None,
        "hours_p50": p50,
        "hours_p90": None if p50 is None else p50 * 2,
        "velocity_source": "prior",
    }


def test_plan_view_follows_the_longest_chain_and_skips_finished_work() -> None:
    rows = [
        row("a", 2.0),
        row("b", 10.0, status="completed"),
        row("c", 3.0, ("a", "b")),
        row("d", 4.0),
        row("e", None, ("c",)),
    ]
    view = plan_view("p", rows)
    assert view["critical_path"] == {"tasks": ["a", "c"], "hours_p50": 5.0}
    assert view["totals"]["pending_estimates"] == 1 and view["totals"]["completed"] == 1
    f = view["forecast_hours"]
    # The forecast's median sits near the longest P50 chain; the tail is longer.
    assert 4.0 <= f["p50"] <= 8.0 and f["p50"] <= f["p85"] <= f["p95"]
    assert view["totals"]["team_points"] == 15.0
