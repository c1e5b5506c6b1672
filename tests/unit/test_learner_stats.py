import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.learner.stats import (
    ModelScore,
    RunFigures,
    RunningStats,
    RunOutcome,
    complexity_affinity,
    learned_rank,
    revise,
    update,
)


def stats_of(values):
    stats = RunningStats()
    for v in values:
        stats = stats.add(v)
    return stats


def test_running_stats_match_numpy_on_random_data():
    values = np.random.default_rng(7).normal(1e6, 3.0, size=5000)  # large offset: stability
    stats = stats_of(values)
    assert stats.count == 5000
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.stddev == pytest.approx(values.std(ddof=1), rel=1e-9)
    assert (stats.min, stats.max) == (values.min(), values.max())


def test_merge_equals_stats_of_concatenation():
    rng = np.random.default_rng(3)
    left, right = rng.exponential(2.0, 700), rng.normal(5.0, 1.0, 300)
    merged = stats_of(left).merge(stats_of(right))
    both = np.concatenate([left, right])
    assert merged.count == 1000
    assert merged.mean == pytest.approx(both.mean(), rel=1e-12)
    assert merged.variance == pytest.approx(both.var(ddof=1), rel=1e-10)
    assert (merged.min, merged.max) == (both.min(), both.max())
    assert RunningStats().merge(merged) == merged == merged.merge(RunningStats())


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60), st.integers(0, 60))
def test_merge_of_any_split_matches_numpy(values, cut):
    cut = min(cut, len(values))
    merged = stats_of(values[:cut]).merge(stats_of(values[cut:]))
    assert merged.mean == pytest.approx(np.mean(values), rel=1e-9, abs=1e-6)
    assert merged.variance == pytest.approx(np.var(values, ddof=1), rel=1e-6, abs=1e-3)


@given(
    st.lists(st.floats(0, 1e3), min_size=1, max_size=60),
    st.integers(0, 59),
    st.floats(0, 1e3),
)
def test_replacing_a_value_matches_the_stats_of_the_revised_list(values, at, new):
    at = min(at, len(values) - 1)
    revised = [*values[:at], new, *values[at + 1 :]]
    stats = stats_of(values).replace(values[at], new)
    assert stats.count == len(values)
    assert stats.mean == pytest.approx(np.mean(revised), rel=1e-9, abs=1e-9)
    if len(values) > 1:
        assert stats.variance == pytest.approx(np.var(revised, ddof=1), rel=1e-6, abs=1e-6)
    assert stats.max == max(max(values), new)


def test_revise_moves_one_runs_cost_and_tokens_only():
    first = RunOutcome("m", "feature", "medium", 5, 2.0, True, 0.8, 0.024, 4_000)
    other = RunOutcome("m", "feature", "medium", 3, 1.0, True, 0.6, 0.010, 1_000)
    score = update(update(ModelScore("m", "feature", "medium"), first), other)
    revised = revise(score, RunFigures(24_000, 4_000), RunFigures(40_000, 7_000))
    assert revised.total_cost_micros == 50_000
    assert revised.total_tokens == 8_000
    assert revised.cost_mean == pytest.approx((0.040 + 0.010) / 2)
    assert (revised.runs, revised.successes, revised.velocity) == (2, 2, score.velocity)
    assert revised.tokens_per_point == pytest.approx(8_000 / 8)


def test_single_value_has_zero_stddev_and_round_trips_through_dict():
    stats = RunningStats().add(4.0)
    assert stats.stddev == 0.0
    assert RunningStats.from_dict(stats.to_dict()) == stats
    assert RunningStats.from_dict(RunningStats().to_dict()) == RunningStats()


def test_non_finite_values_are_rejected():
    with pytest.raises(ValueError, match="finite"):
        RunningStats().add(float("nan"))


def outcome(**overrides):
    base = {
        "model": "sonnet",
        "task_type": "feature",
        "band": "medium",
        "story_points": 5,
        "actual_hours": 2.0,
        "success": True,
        "quality": 0.8,
        "cost_usd": 1.0,
        "tokens": 10_000,
    }
    return RunOutcome(**(base | overrides))


def test_update_tracks_velocity_quality_success_and_cost_per_point():
    score = ModelScore("sonnet", "feature", "medium")
    score = update(score, outcome())  # 2.5 pts/h
    score = update(score, outcome(story_points=8, actual_hours=2.0, quality=1.0))  # 4 pts/h
    score = update(score, outcome(success=False, quality=0.2, cost_usd=2.0, actual_hours=1.0))
    assert score.sample_size == 3
    assert score.success_rate == pytest.approx(2 / 3)
    assert score.velocity.count == 2  # the failed run delivered no points
    assert score.velocity.mean == pytest.approx(3.25)
    assert (score.velocity.min, score.velocity.max) == (2.5, 4.0)
    assert score.quality_mean == pytest.approx(2.0 / 3)
    assert score.cost_mean == pytest.approx(4.0 / 3)
    assert score.cost_per_point == pytest.approx(4.0 / 13)  # failures make points dearer
    assert score.tokens_per_point == pytest.approx(30_000 / 13)
    assert score.total_hours == pytest.approx(5.0)
    assert ModelScore.from_dict(score.to_dict()) == score


def test_total_cost_is_summed_in_exact_micros_and_old_scores_load():
    score = ModelScore("sonnet", "feature", "medium")
    for _ in range(3):
        score = update(score, outcome(cost_usd=0.0195))
    assert score.total_cost_micros == 58_500  # floats would give 0.058499999999999996
    assert score.total_cost_usd == 0.0585
    saved = score.to_dict()
    assert saved["total_cost_micros"] == 58_500 and "total_cost_usd" not in saved
    old = {k: v for k, v in saved.items() if k != "total_cost_micros"} | {"total_cost_usd": 0.0585}
    assert ModelScore.from_dict(old) == score


def test_update_refuses_an_outcome_for_another_key():
    with pytest.raises(ValueError, match="cannot update"):
        update(ModelScore("sonnet", "feature", "medium"), outcome(band="complex"))


def test_outcome_quality_must_be_a_unit_grade():
    with pytest.raises(ValueError, match="quality"):
        outcome(quality=1.5)


def scored(model, **overrides):
    run = outcome(model=model, **overrides)
    return update(ModelScore(model, run.task_type, run.band), run)


def test_complexity_affinity_reports_quality_by_band():
    scores = [scored("m", band="simple", quality=0.9), scored("m", band="complex", quality=0.4)]
    assert complexity_affinity(scores, "m", "feature") == {"simple": 0.9, "complex": 0.4}


def test_learned_rank_prefers_quality_speed_and_low_cost():
    good = scored("good", actual_hours=1.0, cost_usd=1.0)
    slow = scored("slow", actual_hours=5.0, cost_usd=1.0)
    pricey = scored("pricey", actual_hours=1.0, cost_usd=9.0)
    ranks = learned_rank([slow, pricey, good])
    assert next(iter(ranks)) == "good"
    assert ranks["good"] == pytest.approx(1.0)
    assert ranks["slow"] == pytest.approx(0.7)  # lost the whole velocity weight
    assert ranks["pricey"] == pytest.approx(0.7)  # lost the whole cost weight
    # Weighting cost more breaks the tie in favour of the cheap, slow model.
    assert list(learned_rank([slow, pricey, good], weights=(0.2, 0.2, 0.6))) == [
        "good",
        "slow",
        "pricey",
    ]


def test_model_without_delivered_points_ranks_last():
    ranks = learned_rank([scored("ok"), scored("broken", success=False, quality=0.0)])
    assert list(ranks) == ["ok", "broken"]
    assert ranks["broken"] == 0.0


def test_learned_rank_rejects_duplicates_and_bad_weights():
    score = ModelScore("m", "f", "simple")
    with pytest.raises(ValueError, match="one score per model"):
        learned_rank([score, score])
    with pytest.raises(ValueError, match="weights"):
        learned_rank([score], weights=(0, 0, 0))
    assert learned_rank([]) == {}
