"""A workspace's points model is chosen on its newest tasks; calibration changes estimates."""

from __future__ import annotations

import random

from services.estimator.estimator import estimate
from services.estimator.points import HistoricalTask
from services.estimator.scoring import ScoringConfig
from services.estimator.tokens import TokenCalibration
from services.estimator.workspace import select_points_config, workspace_points
from tally.events import TaskSpec

CONFIG = ScoringConfig()


def predictable(n: int) -> list[HistoricalTask]:
    """Tasks whose words say their size: migrations are 13 points, typos 1."""
    rng = random.Random(1)
    out = []
    for i in range(n):
        if rng.random() < 0.5:
            out.append(HistoricalTask(f"m{i}", f"Migrate schema {i}", "database migration", 13))
        else:
            out.append(HistoricalTask(f"t{i}", f"Fix typo {i}", "spelling in docs", 1))
    return out


def noise(n: int) -> list[HistoricalTask]:
    """Tasks whose text says nothing about their points."""
    rng = random.Random(2)
    vocab = [f"word{j}" for j in range(400)]
    return [
        HistoricalTask(
            f"n{i}",
            " ".join(rng.sample(vocab, 4)),
            " ".join(rng.sample(vocab, 8)),
            rng.choice([1, 2, 3, 3, 3, 5, 8]),
        )
        for i in range(n)
    ]


def test_text_that_predicts_points_selects_the_neighbour_model() -> None:
    sel = select_points_config(predictable(200), CONFIG.points)
    assert sel.model == "neighbours" and sel.validation_tasks == 50
    assert sel.neighbours_mae is not None and sel.median_mae is not None
    assert sel.neighbours_mae < sel.median_mae


def test_text_that_predicts_nothing_falls_back_to_the_history_median() -> None:
    history = noise(200)
    sel = select_points_config(history, CONFIG.points)
    assert sel.model == "median"
    points = workspace_points(history, CONFIG.points)
    answers = {
        estimate(TaskSpec(title=f"word{i} word{i + 1}"), points, CONFIG).story_points
        for i in range(0, 300, 37)
    }
    assert answers == {3}  # the history median, whatever the text


def test_the_check_uses_the_shipped_weights_and_never_the_future() -> None:
    history = predictable(200)
    sel = select_points_config(history, CONFIG.points)
    assert sel.config == CONFIG.points  # nothing tuned per workspace
    # Held-out tasks that reverse what the text says make the check fail: the median wins.
    flipped = [
        HistoricalTask(t.task_id, t.title, t.description, 14 - t.story_points)
        for t in history[150:]
    ]
    assert select_points_config(history[:150] + flipped, CONFIG.points).model == "median"


def test_a_small_history_keeps_the_shipped_weights() -> None:
    sel = select_points_config(predictable(40), CONFIG.points)
    assert (sel.model, sel.config) == ("shipped", CONFIG.points)


def test_the_workspace_model_drives_the_estimate_and_cites_evidence() -> None:
    points = workspace_points(predictable(200), CONFIG.points)
    big = estimate(TaskSpec(title="Migrate schema for billing"), points, CONFIG)
    small = estimate(TaskSpec(title="Fix typo in footer"), points, CONFIG)
    assert big.story_points == 13 and small.story_points == 1
    assert big.evidence and all(e.story_points == 13 for e in big.evidence)


def test_measured_velocity_and_token_calibration_change_the_estimate() -> None:
    points = workspace_points([], CONFIG.points)
    spec = TaskSpec(title="Add OAuth login", task_type="feature")
    before = estimate(spec, points, CONFIG)
    slow = {(None, None): [0.1, 0.12, 0.09, 0.11, 0.1, 0.1]}
    after = estimate(
        spec, points, CONFIG, velocity=slow, tokens=TokenCalibration(factors={"feature": 2.0})
    )
    assert (before.velocity_source, after.velocity_source) == ("prior", "measured")
    assert after.hours_p50 > 4 * before.hours_p50
    assert after.tokens.output_tokens == 2 * before.tokens.output_tokens
