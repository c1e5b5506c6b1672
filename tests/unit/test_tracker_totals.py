"""A finished run's totals, computed by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.tracker.totals import SubtaskMark, UsageRow, run_totals, subtask_hours

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_totals_add_tokens_by_kind_and_price_the_run() -> None:
    usage = [
        UsageRow(1000, 200, 3000, 500, 0, 12_000),
        UsageRow(400, 100, 0, 0, 50, 3_000),
    ]
    totals = run_totals(
        started_at=at(0),
        finished_at=at(90),
        usage=usage,
        marks=[],
        story_points=3,
        estimated_hours=1.0,
        review_score=None,
    )
    assert totals.actual_hours == 1.5
    assert totals.tokens.model_dump() == {
        "input_tokens": 1400,
        "output_tokens": 300,
        "cache_read_tokens": 3000,
        "cache_write_tokens": 500,
        "reasoning_tokens": 50,
    }
    assert totals.tokens.total == 1400 + 300 + 3000 + 500
    assert totals.cost_micros == 15_000
    assert totals.cost_usd == 0.015
    assert totals.estimation_error == 0.5  # took half again as long as estimated
    assert totals.velocity == 2.0  # 3 points in 1.5 hours
    assert totals.worker_calls == 2


def test_subtask_hours_run_from_first_start_to_last_completion() -> None:
    marks = [
        SubtaskMark("api", at(0), completed=False),
        SubtaskMark("api", at(30), completed=True, quality=0.6),
        SubtaskMark("api", at(40), completed=False),  # re-opened
        SubtaskMark("api", at(60), completed=True, quality=1.0),
        SubtaskMark("ui", at(10), completed=False),  # never finished: no hours
    ]
    assert subtask_hours(marks) == {"api": 1.0}
    totals = run_totals(
        started_at=at(0),
        finished_at=at(60),
        usage=[],
        marks=marks,
        story_points=None,
        estimated_hours=None,
        review_score=None,
    )
    assert totals.quality_score == 0.8  # mean subtask quality without a review score
    assert totals.velocity is None and totals.estimation_error is None


def test_a_review_score_wins_over_subtask_quality() -> None:
    marks = [SubtaskMark("api", at(0), False), SubtaskMark("api", at(5), True, quality=0.2)]
    totals = run_totals(
        started_at=at(0),
        finished_at=at(10),
        usage=[],
        marks=marks,
        story_points=1,
        estimated_hours=None,
        review_score=0.9,
    )
    assert totals.quality_score == 0.9
