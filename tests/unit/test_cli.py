"""The CLI refuses bad input before touching the bus: exit 2, the line and field named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tally.cli.main import app
from tally.cli.runs import read_run_file
from tally.events import RunFinished

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "run.jsonl"
runner = CliRunner()


def test_every_command_explains_itself() -> None:
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("task", "run", "report", "tokens", "estimate", "quota", "dlq", "plan"):
        assert command in top.output
        assert runner.invoke(app, [command, "--help"]).exit_code == 0


def test_the_example_run_parses_and_counts_its_timeline() -> None:
    events = read_run_file(EXAMPLE)
    assert len(events) == 16
    finished = events[-1]
    assert isinstance(finished, RunFinished) and finished.event_count == 14


def test_a_bad_line_names_the_file_line_and_field(tmp_path: Path) -> None:
    lines = EXAMPLE.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["detail"]["latency_ms"] = -5
    lines[2] = json.dumps(bad)
    path = tmp_path / "run.jsonl"
    path.write_text("\n".join(lines))
    result = runner.invoke(app, ["run", "replay", str(path)])
    assert result.exit_code == 2
    assert "run.jsonl:3" in result.output and "latency_ms" in result.output


def test_lines_without_ids_get_stable_ones_so_replays_stay_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    path.write_text(
        json.dumps(
            {
                "type": "run.event",
                "run_id": "r",
                "at": "2026-11-20T09:00:00Z",
                "detail": {"kind": "note", "text": "hi"},
            }
        )
        + "\n"
    )
    assert read_run_file(path)[0].event_id == read_run_file(path)[0].event_id


def test_an_empty_title_is_refused_before_anything_is_published() -> None:
    result = runner.invoke(app, ["task", "create", ""])
    assert result.exit_code == 2
    assert "title" in result.output


def test_tokens_prints_dollars_from_micros_and_marks_unpriced_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = {
        "calls": 3,
        "input_tokens": 3_000,
        "output_tokens": 900,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micros": 58_500,
        "cost_usd": 0.0585,
        "duration_ms": 1_200.0,
    }
    body = {
        "since": "2026-11-01T00:00:00",
        "rows": [
            {**row, "key": "gpt-5", "unpriced_calls": 0},
            {**row, "key": "acme-inhouse-7b", "cost_micros": 0, "unpriced_calls": 3},
        ],
    }
    monkeypatch.setattr("tally.cli.reports.reporter_get", lambda path, params=None: body)
    monkeypatch.setattr("tally.cli.reports.console.width", 200)
    result = runner.invoke(app, ["tokens"])

    assert result.exit_code == 0, result.output
    assert "$0.0585" in result.output and "0.058499999999999996" not in result.output
    assert "(3 unpriced*)" in result.output
    assert "3 calls had no known price" in result.output


def test_tokens_says_when_only_the_costliest_groups_are_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    row = {
        "key": "task-1",
        "calls": 1,
        "input_tokens": 10,
        "output_tokens": 1,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "reasoning_tokens": 0,
        "cost_micros": 45,
        "unpriced_calls": 0,
        "duration_ms": 10.0,
    }
    asked: dict[str, object] = {}

    def get(path: str, params: dict[str, object] | None = None) -> dict[str, object]:
        asked.update(params or {})
        return {"since": "2026-11-01T00:00:00", "rows": [row], "groups": 1_018, "more": True}

    monkeypatch.setattr("tally.cli.reports.reporter_get", get)
    monkeypatch.setattr("tally.cli.reports.console.width", 200)
    result = runner.invoke(app, ["tokens", "--by", "task", "--limit", "1"])

    assert result.exit_code == 0, result.output
    assert asked["limit"] == "1"
    assert "the 1 of 1,018 groups of highest cost" in result.output
