import json
from datetime import UTC, datetime, timedelta

import pytest

from services.reporter.kpi import compare, compute_kpi
from tally.moneyview import micros

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def ev(kind, minutes, **data):
    return {"kind": kind, "at": at(minutes), "data": data}


def call(minutes, worker, latency, inp, out, cached=0, phase=None, cost=0.0):
    usage = {"input_tokens": inp, "output_tokens": out, "cache_read_tokens": cached}
    data = {
        "worker": worker,
        "model": "m",
        "usage": usage,
        "latency_ms": latency,
        "cost_micros": micros(cost),
    }
    if phase:
        data["phase"] = phase
    return {"kind": "worker_call", "at": at(minutes), "data": data}


TIMELINE = [
    ev("milestone", 0, name="design", status="planned"),
    ev("milestone", 0, name="tests", status="planned"),
    ev("milestone", 0, name="ship", status="planned"),
    ev("phase_start", 0, phase="plan", attempt=1),
    call(2, "planner", 1000, 1000, 200, cached=500, cost=0.10),
    ev("phase_end", 10, phase="plan", attempt=1),
    ev("milestone", 10, name="design", status="completed"),
    ev("phase_start", 10, phase="implement", attempt=1),
    ev("subtask_started", 11, id="s1"),
    call(15, "coder", 2000, 3000, 1000, cost=0.30),
    ev("changes", 20, files=["a.py", "b.py"], lines_added=40, lines_removed=5),
    ev("verification", 25, command="pytest", passed=False, retry=False),
    ev("phase_end", 30, phase="implement", attempt=1),
    ev("phase_start", 30, phase="implement", attempt=2),
    call(35, "coder", 3000, 2000, 500, cost=0.20),
    ev("changes", 40, files=["b.py", "c.py"], lines_added=10, lines_removed=2),
    ev("verification", 45, command="pytest", passed=True, retry=True),
    ev("checkpoint", 46, verified=False, commit="aaa"),
    ev("checkpoint", 50, verified=True, commit="bbb"),
    ev("subtask_completed", 52, id="s1"),
    ev("phase_end", 55, phase="implement", attempt=2),
    ev("milestone", 55, name="tests", status="completed"),
    call(58, "reviewer", 4000, 500, 100, cost=0.05),
    ev("note", 59, text="done"),
]


@pytest.fixture
def kpi():
    shuffled = TIMELINE[::-1]  # the order of rows must not matter
    return compute_kpi(shuffled, started_at=at(0), finished_at=at(60), run_id="run-1")


def test_times_and_phases(kpi):
    assert kpi.total_seconds == 3600
    assert kpi.time_to_verified_checkpoint_seconds == 50 * 60
    phases = {p.name: (p.seconds, p.attempts) for p in kpi.phases}
    assert phases == {"plan": (600, 1), "implement": (45 * 60, 2)}
    assert [p.name for p in kpi.phases] == ["plan", "implement"]


def test_worker_calls_tokens_latency_and_cost(kpi):
    assert kpi.worker_calls == 4
    # Money is exact: 0.10 + 0.30 + 0.20 + 0.05 is 650,000 micro-dollars, never 0.6499…
    assert kpi.cost_micros == 650_000 and kpi.cost_usd == "0.6500"
    t = kpi.tokens
    assert (t.input_tokens, t.output_tokens, t.cache_read_tokens) == (6500, 1800, 500)
    assert kpi.tokens_by_worker["coder"].input_tokens == 5000
    assert kpi.tokens_by_worker["planner"].cache_read_tokens == 500
    assert kpi.tokens_by_phase["plan"].input_tokens == 1000
    assert kpi.tokens_by_phase["implement"].output_tokens == 1500
    assert kpi.tokens_by_phase["(no phase)"].input_tokens == 500  # reviewer ran after all phases
    assert kpi.latency_mean_ms == 2500
    assert kpi.latency_p95_ms == pytest.approx(3850)


def test_verification_changes_milestones(kpi):
    assert (kpi.verifications, kpi.verifications_passed, kpi.verification_retries) == (2, 1, 1)
    assert kpi.files_changed == 3  # b.py edited twice counts once
    assert (kpi.lines_added, kpi.lines_removed) == (50, 7)
    assert (kpi.milestones_completed, kpi.milestones_planned) == (2, 3)
    assert (kpi.subtasks_started, kpi.subtasks_completed) == (1, 1)


def test_summary_has_exactly_ten_readable_lines(kpi):
    lines = kpi.summary_lines()
    assert len(lines) == 10
    assert lines[0] == "Total time: 1h 00m 00s"
    assert lines[1] == "Time to first verified checkpoint: 50m 00s"
    assert lines[2] == "Phases: plan 10m 00s (1 attempt), implement 45m 00s (2 attempts)"
    assert "4" in lines[3] and "$0.65" in lines[3]
    assert lines[4].startswith("Tokens by worker: planner 1.0k in/200 out/500 cache read/")
    assert "cache write" in lines[3] and "cache write" in lines[4]
    assert "implement" in lines[5]
    assert lines[6] == "Latency: mean 2,500 ms, p95 3,850 ms"
    assert lines[7] == "Verification: 2 checks, 1 passed, 1 retry"
    assert lines[8] == "Changes: 3 files, +50/-7 lines"
    assert lines[9] == "Milestones: 2/3 completed"


def test_empty_run_still_gives_ten_lines():
    kpi = compute_kpi([], started_at=at(0), finished_at=at(5))
    lines = kpi.summary_lines()
    assert len(lines) == 10
    assert lines[1].endswith("none") and lines[6] == "Latency: no worker calls"


def test_json_round_trips(kpi):
    data = json.loads(kpi.to_json())
    assert data["run_id"] == "run-1"
    # kpi.json names tokens as token_usage, GET /tokens and the CLI's --json do.
    assert data["tokens_by_worker"]["coder"]["output_tokens"] == 1500
    assert set(data["tokens"]) == {
        "input_tokens",
        "output_tokens",
        "cache_read_tokens",
        "cache_write_tokens",
        "reasoning_tokens",
    }
    assert (data["cost_micros"], data["cost_usd"]) == (650_000, "0.6500")
    assert type(kpi).model_validate_json(kpi.to_json()) == kpi


def test_open_phase_runs_to_the_end_and_counted_file_totals_add_up():
    timeline = [
        ev("phase_start", 0, phase="implement"),
        ev("changes", 5, files=4, lines_added=1, lines_removed=0),
        ev("changes", 6, files=2, lines_added=1, lines_removed=0),
    ]
    kpi = compute_kpi(timeline, finished_at=at(20))
    assert kpi.phases[0].seconds == 20 * 60 and kpi.phases[0].attempts == 1
    assert kpi.files_changed == 6


def test_compare_rows_show_delta_b_minus_a(kpi):
    faster = compute_kpi(TIMELINE, started_at=at(0), finished_at=at(45))
    rows = {metric: (a, b, delta) for metric, a, b, delta in compare(kpi, faster)}
    assert rows["total time"] == ("1h 00m 00s", "45m 00s", "-15m 00s")
    assert rows["worker calls"] == ("4", "4", "+0")
    assert rows["cost"] == ("$0.65", "$0.65", "+$0.00")
    assert rows["phase implement attempts"] == ("2", "2", "+0")
    assert all(len(row) == 4 for row in compare(kpi, faster))


def test_compare_with_missing_values_leaves_delta_blank(kpi):
    empty = compute_kpi([], started_at=at(0), finished_at=at(30))
    rows = {metric: (a, b, delta) for metric, a, b, delta in compare(kpi, empty)}
    assert rows["time to verified checkpoint"] == ("50m 00s", "-", "")
    assert rows["phase plan"] == ("10m 00s", "-", "")


def test_run_just_started_has_zero_time_and_no_times_at_all_is_an_error():
    assert compute_kpi([], started_at=at(0)).total_seconds == 0
    with pytest.raises(ValueError, match="start or end"):
        compute_kpi([])
