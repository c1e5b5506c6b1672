"""Story points from history: nearest tasks, shrinkage to the history, cold start."""

import pytest

from services.estimator.points import (
    FIBONACCI,
    HistoricalTask,
    HistoryIndex,
    PointsQuery,
    band,
    estimate_points,
    estimate_task_points,
    to_fibonacci,
)


def _history() -> list[HistoricalTask]:
    tasks = []
    for i in range(8):
        tasks.append(
            HistoricalTask(
                f"DB-{i}",
                f"Migrate billing database schema part {i}",
                "Move tables to the new postgres cluster with zero downtime",
                13,
            )
        )
        tasks.append(
            HistoricalTask(
                f"DOC-{i}",
                f"Fix typo in README section {i}",
                "Spelling mistake in the documentation",
                1,
            )
        )
        tasks.append(
            HistoricalTask(
                f"UI-{i}",
                f"Add button to settings page {i}",
                "A new toggle on the settings screen",
                3,
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
    assert to_fibonacci(0.5) == 1
    assert to_fibonacci(4) == 5  # log-nearest: 4 is closer to 5 than to 3 by ratio
    assert to_fibonacci(100) == 21
    assert all(to_fibonacci(f) == f for f in FIBONACCI)


def test_similar_past_tasks_drive_the_estimate_and_are_cited() -> None:
    index = HistoryIndex(_history())
    big = estimate_points(
        PointsQuery("Migrate the orders database schema", "to the new postgres cluster"), index
    )
    small = estimate_points(PointsQuery("Fix typo in the README", "spelling"), index)
    assert big.points == 13 and big.band == "complex"
    assert small.points == 1 and small.band == "simple"
    assert big.source == "history"
    assert big.evidence and all(n.task_id.startswith("DB-") for n in big.evidence[:3])
    assert big.evidence[0].similarity >= big.evidence[-1].similarity > 0
    assert 0 < big.confidence < 1


def test_unfamiliar_text_falls_back_to_the_history_median_with_low_confidence() -> None:
    index = HistoryIndex(_history())
    estimate = estimate_points(PointsQuery("Quantum flux capacitor", "zzz qqq"), index)
    assert estimate.points == 3  # the median of 1, 3 and 13 in equal numbers
    assert estimate.evidence == ()
    assert estimate.confidence == 0


def test_nearest_returns_most_similar_first() -> None:
    index = HistoryIndex(_history())
    nearest = index.nearest("settings page button", k=4)
    assert len(nearest) == 4
    assert all(n.task_id.startswith("UI-") for n in nearest)
    sims = [n.similarity for n in nearest]
    assert sims == sorted(sims, reverse=True)


def test_cold_start_uses_feature_priors() -> None:
    empty = HistoryIndex([])
    typo = estimate_points(PointsQuery("Fix typo in docs", task_type="docs"), empty)
    migration = estimate_points(
        PointsQuery(
            "Migrate and refactor the payment service",
            "- move the ledger\n- rewrite the adapters\n- switch traffic\n"
            "Files:\n- pay/ledger.py\n- pay/adapters.py\n- pay/router.py",
            task_type="feature",
        ),
        empty,
    )
    assert typo.source == migration.source == "prior"
    assert typo.points == 1
    assert migration.points >= 13
    assert typo.evidence == ()


def test_subtasks_share_the_total() -> None:
    index = HistoryIndex(_history())
    result = estimate_task_points(
        PointsQuery("Settings work", "- add button to settings page\n- migrate database schema"),
        index,
    )
    parts = {p.subtask.title: p for p in result.subtasks}
    assert len(parts) == 2
    assert parts["migrate database schema"].raw > parts["add button to settings page"].raw
    assert sum(p.raw for p in result.subtasks) == pytest.approx(result.total.raw)
    assert all(p.points in FIBONACCI for p in result.subtasks)


def test_single_subtask_gets_the_whole_estimate() -> None:
    index = HistoryIndex(_history())
    result = estimate_task_points(PointsQuery("Fix typo in README"), index)
    assert len(result.subtasks) == 1
    assert result.subtasks[0].points == result.total.points
