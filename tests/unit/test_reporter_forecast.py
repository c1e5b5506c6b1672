import math

import numpy as np
import pytest
from scipy.stats import norm

from services.reporter.forecast import (
    DependencyError,
    LogNormal,
    critical_path,
    forecast_hours,
    forecast_with_dependencies,
)


def test_points_over_lognormal_velocity_match_analytic_percentiles():
    # 20 points at a velocity of LogNormal(ln 2, 0.3): hours = 20 / v ~ LogNormal(ln 10, 0.3).
    sigma = 0.3
    fc = forecast_hours(points=[8, 5, 5, 2], velocity=LogNormal(math.log(2.0), sigma))
    assert fc.draws == 10_000
    assert fc.p50 == pytest.approx(10.0, rel=0.02)
    assert fc.p85 == pytest.approx(10.0 * math.exp(norm.ppf(0.85) * sigma), rel=0.02)
    assert fc.p95 == pytest.approx(10.0 * math.exp(norm.ppf(0.95) * sigma), rel=0.02)
    assert fc.p50 < fc.p85 < fc.p95


def test_same_seed_same_forecast_and_velocity_samples_are_resampled():
    observed = [1.5, 2.0, 2.5, 3.0]
    one = forecast_hours(points=[13, 8], velocity=observed, seed=42)
    assert one == forecast_hours(points=[13, 8], velocity=observed, seed=42)
    assert 21 / 3.0 <= one.p50 <= one.p95 <= 21 / 1.5


def test_hour_distributions_add_up():
    assert forecast_hours(hours=[[2.0], [3.0]]) == forecast_hours(hours=[[5.0]])
    tasks = [LogNormal(math.log(h), 0.4) for h in (1, 2, 3, 5, 8)]
    fc = forecast_hours(hours=tasks)
    expected_mean = sum(h * math.exp(0.4**2 / 2) for h in (1, 2, 3, 5, 8))
    assert fc.mean == pytest.approx(expected_mean, rel=0.02)
    assert fc.p50 < fc.p85 < fc.p95


def test_points_and_hours_can_be_mixed():
    fc = forecast_hours(points=[4], velocity=[2.0], hours=[[1.0]])
    assert (fc.p50, fc.p95) == (3.0, 3.0)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="velocity"):
        forecast_hours(points=[3])
    with pytest.raises(ValueError, match="positive"):
        forecast_hours(points=[3], velocity=[0.0, 1.0])
    with pytest.raises(ValueError, match="empty"):
        forecast_hours(hours=[[]])


DEPS = {"api": ["schema"], "ui": ["api"], "docs": ["schema"], "release": ["ui", "docs"]}
HOURS = {"schema": 2, "api": 5, "ui": 3, "docs": 1, "release": 1}


def test_critical_path_follows_the_longest_chain():
    path, total = critical_path(list(HOURS), DEPS, HOURS)
    assert path == ["schema", "api", "ui", "release"]
    assert total == 11.0


def test_done_dependencies_are_satisfied():
    tasks = ["api", "ui"]
    assert critical_path(tasks, DEPS, HOURS, done={"schema"}) == (["api", "ui"], 8.0)
    assert critical_path([], {}, {}) == ([], 0.0)


def test_cycle_is_reported_with_its_tasks():
    deps = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    with pytest.raises(DependencyError, match="cycle") as err:
        critical_path(["d", "a", "b", "c"], deps, dict.fromkeys("abcd", 1.0))
    assert "a -> b -> c -> a" in str(err.value)
    with pytest.raises(DependencyError, match="x -> x"):
        critical_path(["x"], {"x": ["x"]}, {"x": 1.0})


def test_missing_dependency_names_the_task():
    with pytest.raises(DependencyError, match="'ui' depends on 'api'"):
        critical_path(["ui"], {"ui": ["api"]}, {"ui": 1.0})


def test_long_chains_do_not_hit_the_recursion_limit():
    tasks = [f"t{i}" for i in range(5000)]
    deps = {f"t{i}": [f"t{i - 1}"] for i in range(1, 5000)}
    path, total = critical_path(tasks[::-1], deps, dict.fromkeys(tasks, 0.5))
    assert len(path) == 5000 and total == 2500.0


def test_dependency_forecast_with_fixed_hours_is_the_critical_path():
    fc = forecast_with_dependencies({t: [h] for t, h in HOURS.items()}, DEPS)
    assert fc.p50 == fc.p95 == 11.0


def test_parallel_tasks_forecast_the_maximum():
    # Two independent LogNormal(0, 0.5) tasks: P(max <= x) = Phi(ln x / 0.5) ** 2.
    fc = forecast_with_dependencies({"a": LogNormal(0, 0.5), "b": LogNormal(0, 0.5)}, {})
    for q, value in ((0.5, fc.p50), (0.85, fc.p85), (0.95, fc.p95)):
        assert value == pytest.approx(math.exp(0.5 * norm.ppf(math.sqrt(q))), rel=0.03)
    serial = forecast_hours(hours=[LogNormal(0, 0.5), LogNormal(0, 0.5)])
    assert fc.p50 < serial.p50


def test_dependency_forecast_validates_graph():
    with pytest.raises(DependencyError, match="cycle"):
        forecast_with_dependencies({"a": [1.0], "b": [1.0]}, {"a": ["b"], "b": ["a"]})
    fc = forecast_with_dependencies({}, {}, n=10)
    assert (fc.p50, fc.draws) == (0.0, 10)
    assert np.isfinite(fc.mean)
