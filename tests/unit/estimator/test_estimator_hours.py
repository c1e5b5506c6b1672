"""Hours from measured durations conditioned on points; the velocity prior until measured."""

import math

import pytest

from services.estimator.hours import Duration, HoursModel, VelocityModel
from services.estimator.scoring import VelocityConfig

CONFIG = VelocityConfig(min_measured=20, min_pool=30)


def test_prior_is_used_without_enough_measured_time() -> None:
    model = HoursModel([Duration(5, 1.0)] * 5, CONFIG)
    est = model.hours(5)
    assert est.source == "prior" and est.samples == 0
    assert est.p50 == pytest.approx(10.0)  # 5 points at 0.5 points/hour
    assert est.p90 == pytest.approx(10.0 * math.exp(1.2816 * 0.8), rel=1e-3)


def test_hours_follow_each_points_values_own_durations() -> None:
    """Not points / velocity: 8-point tasks here take 3x, not 8x, a 1-point task."""
    samples = [Duration(1, h) for h in (1.0, 2.0, 3.0, 4.0, 5.0) * 8]
    samples += [Duration(8, 3 * h) for h in (1.0, 2.0, 3.0, 4.0, 5.0) * 8]
    model = HoursModel(samples, CONFIG)
    small, large = model.hours(1), model.hours(8)
    assert small.source == "measured" and small.samples == 80
    assert small.p50 == pytest.approx(3.0, rel=0.05)
    assert large.p50 == pytest.approx(9.0, rel=0.05)
    assert 4.0 <= small.p90 <= 5.0 and 12.0 <= large.p90 <= 15.0


def test_a_points_value_without_samples_borrows_from_its_neighbours() -> None:
    samples = [Duration(2, 2.0)] * 20 + [Duration(8, 8.0)] * 20
    model = HoursModel(samples, CONFIG)
    assert 2.0 <= model.hours(3).p50 <= 8.0
    assert model.hours(1).p50 == pytest.approx(2.0, rel=0.01)


def test_most_specific_pool_with_enough_samples_wins() -> None:
    samples = [Duration(2, 1.0, "opus", "bug")] * 30 + [Duration(2, 10.0, "haiku", "bug")] * 30
    model = HoursModel(samples, CONFIG)
    assert model.hours(2, "opus", "bug").p50 == pytest.approx(1.0)
    assert model.hours(2, "haiku", "bug").p50 == pytest.approx(10.0)
    assert 1.0 <= model.hours(2, "sonnet", "feature").p50 <= 10.0  # the whole workspace


def test_invalid_durations_are_ignored() -> None:
    bad = [Duration(1, 0.0), Duration(1, -1.0), Duration(1, float("nan")), Duration(-1, 1.0)]
    assert HoursModel(bad * 10, CONFIG).samples == 0


def test_velocity_prior_widens_with_noise() -> None:
    steady = VelocityModel().fit([1.0, 1.1, 0.9, 1.0, 1.05]).hours(3)
    erratic = VelocityModel().fit([0.2, 3.0, 0.5, 2.0, 1.0]).hours(3)
    assert erratic.p90 / erratic.p50 > steady.p90 / steady.p50
