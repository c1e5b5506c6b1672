"""The CLI's rough edges, each reproduced: NATS down, exports, tables, timelines, hints."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.table import Table
from typer.testing import CliRunner

from services.estimator.decompose import decompose
from tally.cli import export as export_cli
from tally.cli import reports as reports_cli
from tally.cli import runs as runs_cli
from tally.cli import tasks as tasks_cli
from tally.cli.common import TallyConsole
from tally.cli.main import app
from tally.events import TaskCreated

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
LONG_MODEL = "claude-sonnet-4-20250514-with-a-very-long-deployment-name"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "args",
    [
        ["task", "create", "Add OAuth login"],
        ["task", "status", "T-1", "completed"],
        ["quota"],
        ["streams", "provision"],
        ["estimate", "Fix login redirect"],
    ],
)
def test_with_nats_down_a_bus_command_says_so_in_one_line(args: list[str]) -> None:
    env = {**os.environ, "TALLY_NATS_URL": f"nats://127.0.0.1:{closed_port()}"}
    done = subprocess.run(
        [sys.executable, "-m", "tally.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: cannot reach NATS at nats://127.0.0.1:")


def fake_reporter(pages: list[httpx.Response]) -> Any:
    answers = iter(pages)

    def handler(request: httpx.Request) -> httpx.Response:
        return next(answers)

    return lambda: httpx.Client(transport=httpx.MockTransport(handler), base_url="http://r")


def page(rows: list[dict[str, Any]], cursor: str | None) -> httpx.Response:
    return httpx.Response(200, json={"rows": rows, "next_cursor": cursor})


def test_export_to_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "missing" / "dir" / "x.json"
    result = runner.invoke(app, ["export", "runs", "-o", str(target)])
    assert result.exit_code == 2
    assert f"--output: directory {target.parent} does not exist" in result.output
    assert "Traceback" not in result.output


def test_a_failed_export_leaves_the_target_untouched_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runs.json"
    target.write_text("yesterday's export\n")
    broken = [page([{"run_id": "r1"}], "c1"), httpx.Response(500, text="boom")]
    monkeypatch.setattr(export_cli, "reporter_client", fake_reporter(broken))
    result = runner.invoke(app, ["export", "runs", "-o", str(target)])
    assert result.exit_code == 1 and "reporter answered 500" in result.output
    assert target.read_text() == "yesterday's export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.json"]


def test_export_json_summarises_a_written_file_and_prints_rows_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "runs.json"
    pages = [page([{"run_id": "r1"}], "c1"), page([{"run_id": "r2"}], None)]
    monkeypatch.setattr(export_cli, "reporter_client", fake_reporter(pages))
    result = runner.invoke(app, ["export", "runs", "-o", str(target), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "kind": "runs",
        "rows": 2,
        "format": "json",
        "output": str(target),
    }
    assert [r["run_id"] for r in json.loads(target.read_text())] == ["r1", "r2"]

    monkeypatch.setattr(export_cli, "reporter_client", fake_reporter([page([{"a": 1}], None)]))
    result = runner.invoke(app, ["export", "runs", "--json"])
    assert json.loads(result.stdout) == [{"a": 1}]
    refused = runner.invoke(app, ["export", "runs", "--json", "--format", "csv"])
    assert refused.exit_code == 2


@pytest.mark.parametrize(("option", "value"), [("--status", "done"), ("--outcome", "succeeded")])
def test_an_unknown_status_or_outcome_is_refused_naming_the_choices(
    option: str, value: str
) -> None:
    result = runner.invoke(app, ["export", "runs", option, value])
    assert result.exit_code == 2
    assert f"{option}: unknown value {value!r}" in result.output


def token_rows(model: str) -> dict[str, Any]:
    row = {
        "key": model,
        "calls": 3,
        "input_tokens": 12_000_000,
        "output_tokens": 800_000,
        "cache_read_tokens": 9_000_000,
        "cache_write_tokens": 100_000,
        "reasoning_tokens": 300,
        "cost_usd": 12.5,
        "duration_ms": 4200,
    }
    return {"since": "2026-03-01T00:00:00+00:00", "rows": [row] if model else []}


def test_tables_never_cut_a_model_name_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports_cli, "reporter_get", lambda *a, **k: token_rows(LONG_MODEL))
    result = runner.invoke(app, ["tokens"])
    assert result.exit_code == 0
    assert LONG_MODEL in result.output and "…" not in result.output


def test_tables_wrap_rather_than_cut_on_a_narrow_terminal() -> None:
    console = TallyConsole(force_terminal=True, width=60, record=True)
    table = Table()
    for col in ("model", "calls", "input", "output", "cache read", "cache write", "cost"):
        table.add_column(col)
    table.add_row(LONG_MODEL, "3", "12,000,000", "800,000", "9,000,000", "100,000", "12.50")
    console.print(table)
    text = console.export_text()
    assert "…" not in text
    pieces = "".join(line.split("│")[1].strip() for line in text.splitlines() if "│" in line)
    assert LONG_MODEL in pieces


def test_empty_tokens_print_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports_cli, "reporter_get", lambda *a, **k: token_rows(""))
    result = runner.invoke(app, ["tokens", "--since", "7d"])
    assert result.exit_code == 0
    assert "no token use recorded since 2026-03-01T00:00Z" in result.output
    assert "--since 30d" in result.output


def test_run_show_prints_values_a_person_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    body = {
        "run": {"task_id": "T-1", "model": "claude-sonnet-4", "outcome": "complete"},
        "state": "finished",
        "timeline": [
            {
                "at": "2026-03-02T09:00:05+00:00",
                "kind": "worker_call",
                "data": {
                    "kind": "worker_call",
                    "worker": "coder",
                    "usage": {"input_tokens": 1200, "cache_read_input_tokens": 800},
                    "latency_ms": 2100.5,
                    "files": ["a.py", "b.py"],
                    "passed": True,
                },
            }
        ],
    }
    monkeypatch.setattr(runs_cli, "reporter_get", lambda *a, **k: body)
    result = runner.invoke(app, ["run", "show", "R-1"])
    assert result.exit_code == 0
    out = result.output
    assert "usage.input_tokens=1,200" in out and "usage.cache_read_input_tokens=800" in out
    assert "files=a.py, b.py" in out and "passed=yes" in out and "latency_ms=2,100.5" in out
    assert "{" not in out and "[" not in out


def test_the_readme_first_example_creates_two_subtasks(monkeypatch: pytest.MonkeyPatch) -> None:
    line = next(
        ln for ln in (ROOT / "README.md").read_text().splitlines() if "tally task create" in ln
    )
    command = line.split("uv run tally ", 1)[1].split(" # ", 1)[0]
    argv = (
        subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, check=True)
        .stdout.decode()
        .split("\0")[:-1]
    )
    seen: list[TaskCreated] = []

    async def publish_only(event: TaskCreated, as_json: bool, timeout: float) -> dict[str, Any]:
        seen.append(event)
        return {"task_id": event.task_id}

    monkeypatch.setattr(tasks_cli, "_create", publish_only)
    assert runner.invoke(app, argv).exit_code == 0
    (event,) = seen
    assert [s.title for s in decompose(event.title, event.description)] == ["callback", "refresh"]
