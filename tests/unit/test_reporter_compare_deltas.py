"""Comparing two runs' KPIs: flattened numbers, deltas b - a, ratios, and the CLI table."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from services.reporter.compare import RunReport, comparison, kpi_deltas, numeric_kpis
from services.reporter.kpi import compute_kpi
from tally.cli import reports
from tally.cli.main import app

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
runner = CliRunner()


def report(run_id: str, minutes: float, calls: int, outcome: str = "complete") -> RunReport:
    timeline = [
        {"kind": "phase_start", "at": T0, "data": {"phase": "implement"}},
        *(
            {
                "kind": "worker_call",
                "at": T0 + timedelta(minutes=1 + i),
                "data": {"worker": "coder", "usage": {"input_tokens": 100, "output_tokens": 10}},
            }
            for i in range(calls)
        ),
    ]
    end = T0 + timedelta(minutes=minutes)
    kpi = compute_kpi(timeline, started_at=T0, finished_at=end, run_id=run_id)
    return RunReport(run_id, {"finished_at": end, "outcome": outcome}, kpi)


def test_numeric_kpis_flatten_maps_and_named_lists_and_skip_the_rest() -> None:
    flat = numeric_kpis(
        {
            "run_id": "r",
            "total_seconds": 60.0,
            "latency_mean_ms": None,
            "phases": [{"name": "plan", "attempts": 2, "seconds": 30.0}],
            "tokens_by_worker": {"coder": {"input": 5}},
            "verified": True,
        }
    )
    assert flat == {
        "total_seconds": 60.0,
        "phases.plan.attempts": 2,
        "phases.plan.seconds": 30.0,
        "tokens_by_worker.coder.input": 5,
    }


def test_deltas_are_b_minus_a_with_ratios_only_where_a_is_not_zero() -> None:
    deltas = kpi_deltas(
        {"cost_usd": 0.3, "worker_calls": 0, "tokens": {"input": 400}},
        {"cost_usd": 0.1, "worker_calls": 2, "tokens": {"input": 100}, "files_changed": 3},
    )
    assert deltas["cost_usd"] == {"a": 0.3, "b": 0.1, "delta": -0.2, "ratio": 0.333333}
    assert deltas["worker_calls"] == {"a": 0, "b": 2, "delta": 2, "ratio": None}
    assert deltas["tokens.input"]["ratio"] == 0.25
    assert deltas["files_changed"] == {"a": None, "b": 3, "delta": None, "ratio": None}


def test_the_cli_prints_both_runs_and_the_change(monkeypatch: pytest.MonkeyPatch) -> None:
    body = comparison(report("run-a", 40, 3, outcome="error"), report("run-b", 25, 1)).model_dump(
        mode="json"
    )
    asked: list[tuple[str, Any]] = []

    def fake_get(path: str, params: dict[str, str] | None = None) -> Any:
        asked.append((path, params))
        return body

    monkeypatch.setattr(reports, "reporter_get", fake_get)
    result = runner.invoke(app, ["report", "run-a", "--compare", "run-b"])
    assert result.exit_code == 0, result.output
    assert asked == [("/compare", {"a": "run-a", "b": "run-b"})]
    cells = {
        cols[0]: cols[1:]
        for line in result.stdout.splitlines()
        if len(cols := [c.strip() for c in re.split("[│┃]", line)[1:-1]]) == 4
    }
    assert cells["metric"] == ["run-a", "run-b", "change (B - A)"]
    assert cells["total time"] == ["40m 00s", "25m 00s", "-15m 00s"]
    assert cells["worker calls"] == ["3", "1", "-2"]
    assert "run run-a (error) vs run run-b (complete)" in result.stdout
