"""Hours from points and velocity: prior until measured, P90 above P50."""

import math

import pytest

from services.estimator.hours import VelocityModel, velocity_model
from services.estimator.scoring import VelocityConfig


def test_prior_is_used_below_the_sample_threshold() -> None:
    model = VelocityModel(prior_median=0.5, prior_sigma=0.8).fit([1.0, 2.0])
    estimate = model.hours(5)
    assert estimate.source == "prior"
    assert estimate.samples == 0
    assert estimate.p50 == pytest.approx(10.0)  # 5 points at 0.5 points/hour
    assert estimate.p90 == pytest.approx(10.0 * math.exp(1.2816 * 0.8), rel=1e-3)


def test_measured_velocity_replaces_the_prior() -> None:
    samples = [2.0, 1.8, 2.2, 2.1, 1.9, 2.0]
    estimate = VelocityModel().fit(samples).hours(4)
    assert estimate.source == "measured"
    assert estimate.samples == 6
    assert estimate.p50 == pytest.approx(2.0, rel=0.05)  # 4 points at ~2 points/hour
    assert estimate.p50 < estimate.mean < estimate.p90


def test_p90_exceeds_p50_and_hours_scale_with_points() -> None:
    model = VelocityModel().fit([0.3, 0.9, 0.5, 0.4, 0.7, 1.2, 0.2])
    small, large = model.hours(2), model.hours(8)
    assert small.p90 > small.p50 > 0
    assert large.p50 == pytest.approx(4 * small.p50)


def test_noisier_velocity_widens_the_p90() -> None:
    steady = VelocityModel().fit([1.0, 1.1, 0.9, 1.0, 1.05]).hours(3)
    erratic = VelocityModel().fit([0.2, 3.0, 0.5, 2.0, 1.0]).hours(3)
    assert erratic.p90 / erratic.p50 > steady.p90 / steady.p50


def test_invalid_samples_are_ignored() -> None:
    model = VelocityModel().fit([0.0, -1.0, float("nan"), 1.0, 1.0])
    assert model.hours(1).source == "prior"


def test_most_specific_pool_with_enough_samples_wins() -> None:
    config = VelocityConfig(min_samples=5)
    pools = {
        ("opus", "bug"): [4.0] * 3,  # too few: skipped
        ("opus", None): [2.0, 2.1, 1.9, 2.0, 2.0],
        (None, None): [0.5] * 20,
    }
    assert velocity_model(pools, "opus", "bug", config).hours(2).p50 == pytest.approx(1.0, rel=0.05)
    assert velocity_model(pools, "haiku", "bug", config).hours(2).p50 == pytest.approx(
        4.0, rel=0.05
    )
    assert velocity_model({}, "haiku", "bug", config).hours(2).source == "prior"
