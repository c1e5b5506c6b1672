"""Calibration: lognormal velocity fits, token ratios, the error trend, and the round trip
of a published fit through the estimator's own velocity model."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from services.estimator.hours import VelocityModel
from services.learner.calibration import (
    VelocityRow,
    error_trend,
    fit_velocity,
    token_factors,
    velocity_fits,
)
from tally.events import CalibrationUpdated


def test_fit_matches_scipy_lognormal_fit() -> None:
    samples = [0.4, 0.55, 0.7, 0.5, 0.9, 0.62]
    fit = fit_velocity(samples)
    shape, _, scale = stats.lognorm.fit(samples, floc=0)
    assert fit is not None
    assert fit.mu == pytest.approx(math.log(scale))
    assert fit.sigma == pytest.approx(shape)
    assert fit.samples == 6
    assert fit.median == pytest.approx(scale)


def test_fit_ignores_unusable_values_and_needs_two() -> None:
    assert fit_velocity([1.0, 0.0, -2.0, float("nan")]) is None
    assert fit_velocity([1.0, 2.0, 0.0]) is not None


def test_pools_need_enough_samples_and_fall_back_to_broader_keys() -> None:
    rows = [VelocityRow("a", "bug", 1.0 + i / 10) for i in range(5)]
    rows += [VelocityRow("b", "bug", 2.0), VelocityRow("b", "docs", 3.0)]
    fits = velocity_fits(rows, min_samples=5)
    assert set(fits) == {"a|bug", "a|*", "*|bug", "*|*"}  # b has too few runs of its own
    assert fits["*|bug"].samples == 6
    assert fits["*|*"].samples == 7
    # The faster model pulls the pooled median up.
    assert fits["*|bug"].median > fits["a|bug"].median


def test_token_factor_is_geometric_mean_of_ratios_per_type() -> None:
    rows = [("bug", 2000, 1000), ("bug", 500, 1000), ("bug", 1000, 1000)]
    rows += [("docs", 3000, 1000)] * 3 + [("docs", 0, 1000), ("feature", 4000, 1000)]
    factors = token_factors(rows, min_samples=3)
    assert factors["bug"] == pytest.approx(1.0)  # 2x and 0.5x cancel
    assert factors["docs"] == pytest.approx(3.0)  # the run with no usage is skipped
    assert "feature" not in factors  # one run is not evidence


def test_error_trend_sees_estimates_getting_better() -> None:
    errors = [0.6] * 20 + [0.2] * 20
    trend = error_trend(errors, window=20)
    assert trend.improving is True
    assert trend.recent_mae == pytest.approx(0.2)
    assert trend.previous_mae == pytest.approx(0.6)
    assert trend.slope is not None and trend.slope < 0
    worse = error_trend(list(reversed(errors)), window=20)
    assert worse.improving is False


def test_error_trend_undecided_with_one_window() -> None:
    trend = error_trend([0.1, -0.3, 0.2], window=20)
    assert trend.improving is None
    assert trend.recent_mae == pytest.approx(0.2)


def test_published_fit_refits_exactly_in_the_estimator() -> None:
    rng = np.random.default_rng(7)
    samples = list(rng.lognormal(mean=0.3, sigma=0.4, size=12))
    fit = fit_velocity(samples)
    assert fit is not None
    event = CalibrationUpdated(velocity={"m|bug": (fit.mu, fit.sigma, fit.samples)})
    pools = event.velocity_pools()
    assert list(pools) == [("m", "bug")]
    from_raw = VelocityModel().fit(samples).hours(8)
    from_published = VelocityModel().fit(pools[("m", "bug")]).hours(8)
    assert from_published.p50 == pytest.approx(from_raw.p50, rel=1e-6)
    assert from_published.p90 == pytest.approx(from_raw.p90, rel=1e-6)
    assert from_published.samples == from_raw.samples == 12
