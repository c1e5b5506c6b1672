"""``tally history import`` and ``tally estimate --file`` check the whole file first."""

from __future__ import annotations

from pathlib import Path

import pytest

from tally.cli.csvfile import CsvError, parse_rows, read_rows
from tally.cli.estimate import FILE_COLUMNS, FILE_OPTIONAL, request_for
from tally.cli.history import batches, read_history
from tally.events.plans import MAX_HISTORY_BATCH


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "f.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_history_rows_become_records(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "id,title,description,story_points,actual_hours,task_type,model,completed_at\n"
        "H-1,Add login,OAuth,5,3.5,feature,gpt-5,2025-01-02T10:00:00Z\n"
        "H-2,Fix typo,,1,,,,\n",
    )
    first, second = read_history(path)
    assert (first.task_id, first.story_points, first.actual_hours, first.model) == (
        "H-1",
        5.0,
        3.5,
        "gpt-5",
    )
    assert first.completed_at is not None and first.completed_at.year == 2025
    assert (second.actual_hours, second.task_type, second.completed_at) == (None, None, None)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ("H-1,,x,5\n", "row 1, field title"),
        ("H-1,Ok,x,five\n", "row 1, field story_points"),
        ("H-1,Ok,x,5\nH-2,Ok,x,-1\n", "row 2, field story_points"),
        ("H-1,Ok,x,5\nH-1,Ok,x,3\n", "row 2, field id: 'H-1' repeats row 1"),
    ],
)
def test_a_bad_history_row_is_named(tmp_path: Path, rows: str, expected: str) -> None:
    with pytest.raises(CsvError) as err:
        read_history(write(tmp_path, "id,title,description,story_points\n" + rows))
    assert expected in str(err.value)


def test_every_bad_row_is_reported_at_once(tmp_path: Path) -> None:
    body = "".join(f"H-{i},,x,5\n" for i in range(3))
    with pytest.raises(CsvError) as err:
        read_history(write(tmp_path, "id,title,description,story_points\n" + body))
    assert len(err.value.problems) == 3


def test_history_needs_its_columns(tmp_path: Path) -> None:
    with pytest.raises(CsvError, match="missing columns: story_points"):
        read_history(write(tmp_path, "id,title,description\nH-1,Ok,x\n"))


def test_batches_respect_the_row_limit_and_keep_order(tmp_path: Path) -> None:
    n = MAX_HISTORY_BATCH + 7
    body = "".join(f"H-{i},Task {i},,1\n" for i in range(n))
    records = read_history(write(tmp_path, "id,title,description,story_points\n" + body))
    parts = list(batches(records))
    assert [len(p) for p in parts] == [MAX_HISTORY_BATCH, 7]
    assert [r.task_id for p in parts for r in p] == [f"H-{i}" for i in range(n)]


def test_estimate_file_rows_validate_priority(tmp_path: Path) -> None:
    path = write(tmp_path, 'title,priority,labels\nAdd login,P1,"backend, auth"\nOk,P9,\n')
    rows = read_rows(path, FILE_COLUMNS, FILE_OPTIONAL)
    with pytest.raises(CsvError, match="row 2, field priority"):
        parse_rows(rows, lambda r: request_for(r, "ws"))
    first = request_for(rows[0], "ws")
    assert first.labels == ("backend", "auth") and first.priority == "P1"


async def test_the_first_estimate_waits_for_a_cold_workspace_build() -> None:
    """The defect: a first ``estimate --file`` on a big cold workspace hit the 10 s timeout."""
    from typing import Any

    from tally.cli import estimate as cli
    from tally.events import EstimateRequest

    class Recorder:
        timeouts: list[float] = []

        async def request(self, *args: Any, timeout: float, **kwargs: Any) -> str:
            self.timeouts.append(timeout)
            return "answer"

    client = Recorder()
    request = EstimateRequest(workspace="acme", source="cli", title="Fix login")
    assert await cli._first(client, request, 10.0) == "answer"  # type: ignore[arg-type]
    assert client.timeouts == [cli.BUILD_WAIT_S] and cli.BUILD_WAIT_S >= 60
