import numpy as np
import pytest
from scipy import stats

from services.learner.abtest import (
    Verdict,
    cohens_d,
    compare_arms,
    hedges_g,
    held_out_split,
    is_held_out,
    welch_t_test,
)

A = [27.5, 21.0, 19.0, 23.6, 17.0, 17.9, 16.9, 20.1, 21.9, 22.6, 23.1, 19.6, 19.0, 21.7, 21.4]
B = [27.1, 22.0, 20.8, 23.4, 23.4, 23.5, 25.8, 22.0, 24.8, 20.2, 21.9, 22.1, 22.9, 20.5, 24.4]


def test_welch_matches_scipy_on_known_samples():
    ours = welch_t_test(A, B)
    ref = stats.ttest_ind(A, B, equal_var=False)
    assert ours.t == pytest.approx(ref.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(ref.df, rel=1e-12)
    assert ours.t == pytest.approx(-2.46, abs=0.01)  # textbook value for these samples


def test_welch_matches_scipy_on_unequal_sizes_and_variances():
    rng = np.random.default_rng(11)
    a, b = rng.normal(10, 1, 12), rng.normal(10.5, 4, 40)
    ref = stats.ttest_ind(a, b, equal_var=False)
    assert welch_t_test(a, b).p_value == pytest.approx(ref.pvalue, rel=1e-10)


def test_constant_arms_give_decisive_or_null_results():
    assert welch_t_test([1.0, 1.0], [1.0, 1.0]).p_value == 1.0
    result = welch_t_test([2.0, 2.0], [1.0, 1.0])
    assert result.p_value == 0.0 and result.t == float("inf")


def test_effect_sizes():
    a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 5.0, 6.0]
    assert cohens_d(a, b) == pytest.approx(-2.0 / np.std(a, ddof=1))
    assert hedges_g(a, b) == pytest.approx(cohens_d(a, b) * (1 - 3 / (4 * 8 - 9)))
    assert abs(hedges_g(a, b)) < abs(cohens_d(a, b))


def test_verdict_waits_for_minimum_samples():
    small = compare_arms("quality", [0.9, 0.95, 0.92], [0.1, 0.2, 0.15], min_samples=10)
    assert small.verdict is Verdict.INSUFFICIENT_DATA
    assert small.p_value is not None and small.p_value < 0.05  # still reported
    assert compare_arms("quality", [1.0], [], min_samples=1).verdict == "insufficient data"


def test_verdict_names_the_better_arm():
    rng = np.random.default_rng(5)
    high, low = rng.normal(0.8, 0.05, 40), rng.normal(0.6, 0.05, 40)
    assert compare_arms("quality", high, low).verdict == "A better"
    assert compare_arms("quality", low, high).verdict == "B better"
    # For cost, the arm with the lower mean wins.
    assert compare_arms("cost", high, low, higher_is_better=False).verdict == "B better"
    same = compare_arms("quality", rng.normal(0.7, 0.1, 40), rng.normal(0.7, 0.1, 40))
    assert same.verdict == "no significant difference"
    assert same.n_a == same.n_b == 40


def test_held_out_split_is_deterministic_and_near_share():
    ids = [f"task-{i}" for i in range(10_000)]
    train, held = held_out_split(ids)
    assert len(held) / len(ids) == pytest.approx(0.2, abs=0.015)
    assert held_out_split(ids) == (train, held)
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(ids)
    assert all(is_held_out(t) for t in held)
    assert not any(is_held_out(t, share=0.0) for t in ids[:100])
    assert all(is_held_out(t, share=1.0) for t in ids[:100])


def test_an_assignment_arm_label_names_its_variant_only_for_its_experiment():
    from services.learner.abtest import arm_name

    assert arm_name("cheap-vs-best:B", "cheap-vs-best") == "B"
    assert arm_name("cheap-vs-best-2:B", "cheap-vs-best") is None
    assert arm_name("other:A", "cheap-vs-best") is None
    assert arm_name("cheap-vs-best:", "cheap-vs-best") is None
    assert arm_name(None, "cheap-vs-best") is None
