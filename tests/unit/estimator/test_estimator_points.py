"""Story points: bands, cold start, the workspace's own scale, subtasks."""

import pytest

from services.estimator.points import (
    FIBONACCI,
    HistoricalTask,
    PointsQuery,
    band,
    estimate_points,
    estimate_task_points,
    to_fibonacci,
)
from services.estimator.points_model import PointsModel
from services.estimator.scoring import PointsConfig

CONFIG = PointsConfig()


def _history(
    points: tuple[float, float, float] = (13, 1, 3), copies: int = 60
) -> list[HistoricalTask]:
    big, small, mid = points
    tasks = []
    for i in range(copies):
        tasks.append(
            HistoricalTask(
                f"DB-{i}",
                f"Migrate billing database schema part {i}",
                "Move tables to the new postgres cluster with zero downtime",
                big,
            )
        )
        tasks.append(
            HistoricalTask(
                f"DOC-{i}", f"Fix typo in README section {i}", "Spelling mistake in docs", small
            )
        )
        tasks.append(
            HistoricalTask(
                f"UI-{i}", f"Add button to settings page {i}", "A new toggle on the screen", mid
            )
        )
    return tasks


@pytest.mark.parametrize(
    ("points", "expected"),
    [(1, "simple"), (3, "simple"), (5, "medium"), (8, "medium"), (13, "complex"), (21, "complex")],
)
def test_bands_follow_the_fibonacci_thresholds(points: int, expected: str) -> None:
    assert band(points) == expected


def test_fibonacci_rounding_is_in_log_space_and_clamped() -> None:
    assert to_fibonacci(0) == 1
    assert to_fibonacci(4) == 5  # log-nearest: 4 is closer to 5 than to 3 by ratio
    assert to_fibonacci(100) == 21
    assert all(to_fibonacci(f) == f for f in FIBONACCI)


def test_cold_start_uses_feature_priors() -> None:
    typo = estimate_points(PointsQuery("Fix typo in docs", task_type="docs"), None)
    migration = estimate_points(
        PointsQuery(
            "Migrate and refactor the payment service",
            "- move the ledger\n- rewrite the adapters\n- switch traffic\n"
            "Files:\n- pay/ledger.py\n- pay/adapters.py\n- pay/router.py",
            task_type="feature",
        ),
        None,
    )
    assert typo.source == migration.source == "prior"
    assert typo.points == 1
    assert migration.points >= 13
    assert typo.evidence == ()


def test_points_are_on_the_workspaces_own_scale() -> None:
    """A workspace estimating in 0.5, 4 and 40 gets those values, not Fibonacci ones."""
    model = PointsModel(_history((40, 0.5, 4)), CONFIG)
    big = estimate_points(PointsQuery("Migrate billing database schema"), model)
    small = estimate_points(PointsQuery("Fix typo in README"), model)
    assert (big.points, small.points) == (40, 0.5)
    assert set(model.values) == {0.5, 4, 40}
    assert model.to_scale(30) == 40 and model.to_scale(0.7) == 0.5


def test_subtasks_share_the_total_on_the_scale() -> None:
    model = PointsModel(_history(), CONFIG)
    result = estimate_task_points(
        PointsQuery("Settings work", "- add button to settings page\n- migrate database schema"),
        model,
    )
    parts = {p.subtask.title: p for p in result.subtasks}
    assert len(parts) == 2
    assert parts["migrate database schema"].points >= parts["add button to settings page"].points
    assert all(p.points in model.values for p in result.subtasks)


def test_single_subtask_gets_the_whole_estimate() -> None:
    model = PointsModel(_history(), CONFIG)
    result = estimate_task_points(PointsQuery("Fix typo in README"), model)
    assert len(result.subtasks) == 1
    assert result.subtasks[0].points == result.total.points
