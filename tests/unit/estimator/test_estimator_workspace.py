"""A workspace's points model earns its place inside history; hours come from measured time."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.estimator.estimator import estimate
from services.estimator.hours import Duration
from services.estimator.points import HistoricalTask
from services.estimator.points_model import PointsModel
from services.estimator.scoring import PointsConfig, ScoringConfig
from services.estimator.tokens import TokenCalibration
from services.estimator.workspace import build_workspace
from tally.events import TaskSpec

CONFIG = ScoringConfig()
#: The same, with each workspace checking its model against its history median.
CHECKED = ScoringConfig(points=PointsConfig(check_against_median=True))


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


def test_text_that_predicts_points_earns_the_model_a_share() -> None:
    fit = PointsModel(predictable(200), CHECKED.points).fit
    assert fit.beats_median and fit.validation_tasks == 100
    assert fit.model_mae is not None and fit.median_mae is not None
    assert fit.model_mae < fit.median_mae


def test_estimates_vary_with_the_text_not_one_constant() -> None:
    """The defect: most workspaces got their history median for every task."""
    ws = build_workspace(predictable(200), (), CONFIG)
    big = estimate(TaskSpec(title="Migrate schema for billing"), ws, CONFIG)
    small = estimate(TaskSpec(title="Fix typo in footer"), ws, CONFIG)
    assert (big.story_points, small.story_points) == (13, 1)
    assert big.points_source == "model"
    assert big.evidence and all(e.story_points == 13 for e in big.evidence)


def test_text_that_predicts_nothing_uses_the_history_median_and_says_so() -> None:
    history = noise(200)
    ws = build_workspace(history, (), CHECKED)
    assert ws.points is not None and not ws.points.fit.beats_median
    est = estimate(TaskSpec(title="word1 word2 word3"), ws, CHECKED)
    assert est.points_source == "median"
    assert est.story_points == ws.points.median == 3


def test_the_weight_is_chosen_inside_history_never_on_future_tasks() -> None:
    """Appending tasks changes the choice only through the history it is given."""
    history = predictable(200)
    fit = PointsModel(history, CHECKED.points).fit
    assert PointsModel(history, CHECKED.points).fit == fit  # deterministic
    assert PointsModel(history + noise(5), CHECKED.points).fit.validation_tasks == 102


def test_a_small_history_uses_its_median_untested() -> None:
    for config in (CONFIG, CHECKED):
        fit = PointsModel(predictable(10), config.points).fit
        assert (fit.weight, fit.validation_tasks) == (0.0, 0)


def test_by_default_the_model_estimates_without_the_inside_history_check() -> None:
    """The check lost on the middle 20% of the public projects: off unless configured."""
    fit = PointsModel(noise(200), CONFIG.points).fit
    assert fit.beats_median and fit.validation_tasks == 0 and fit.model_mae is None


def test_the_estimate_is_the_median_of_mixture_neighbours_and_ordinal_model() -> None:
    """Two of the three estimates agreeing decide; the result is a value of the scale."""
    from services.estimator.points_model import _points, _TextSignals

    values = np.array([1.0, 3.0, 8.0, 40.0])
    prior = np.array([0.1, 0.5, 0.3, 0.1])
    votes = np.array([[0.0, 0.0, 0.2, 0.8], [0.0, 1.0, 0.0, 0.0]])  # neighbours: 40, then 3
    probs = np.array([[0.0, 0.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    signals = _TextSignals(votes, probs, np.array([3, 0]), None)  # ordinal: 40, then 1
    points, mixture = _points(signals, prior, values, PointsConfig(), on=True)
    assert points.tolist() == [40.0, 3.0]
    assert np.allclose(mixture.sum(axis=1), 1.0)
    off, _ = _points(signals, prior, values, PointsConfig(), on=False)
    assert off.tolist() == [3.0, 3.0]  # the history median


def test_the_ordinal_model_reads_at_least_this_value_from_the_text() -> None:
    """One regression per value for "at least this value", on the workspace's own scale."""
    history = [HistoricalTask(f"m{i}", f"Rewrite engine {i}", "rewrite", 40) for i in range(30)] + [
        HistoricalTask(f"t{i}", f"Fix typo {i}", "spelling", 0.5) for i in range(30)
    ]
    model = PointsModel(history, CONFIG.points)
    assert [p.points for p in model.predict(["Rewrite engine"], [""])] == [40.0]
    assert [p.points for p in model.predict(["Fix typo"], [""])] == [0.5]


def test_imported_actual_hours_drive_the_hours() -> None:
    """The defect: imported hours were ignored and every estimate used the prior."""
    history = [
        HistoricalTask(f"t{i}", f"Fix typo {i}", "spelling", 1, actual_hours=h)
        for i, h in enumerate([3.0, 4.0, 5.0] * 10)
    ]
    ws = build_workspace(history, (), CONFIG)
    est = estimate(TaskSpec(title="Fix typo in footer"), ws, CONFIG)
    assert est.velocity_source == "measured"
    assert 3.0 <= est.hours_p50 <= 5.0 and est.hours_p90 <= 5.0 + 1e-9
    thin = build_workspace(history[:4], (), CONFIG)
    cold = estimate(TaskSpec(title="Fix typo in footer"), thin, CONFIG)
    assert cold.velocity_source == "prior"


def test_runs_and_imports_are_one_sample_set_each_task_counted_once() -> None:
    history = [
        HistoricalTask(f"t{i}", f"Fix typo {i}", "spelling", 1, actual_hours=2.0) for i in range(20)
    ]
    runs = [Duration(1, 2.0, "opus", None, task_id=f"t{i}") for i in range(20)]  # the same tasks
    runs += [Duration(1, 2.0, "opus", None, task_id=f"r{i}") for i in range(5)]
    assert build_workspace(history, runs, CONFIG).hours.samples == 25


def test_token_calibration_changes_the_estimate() -> None:
    spec = TaskSpec(title="Add OAuth login", task_type="feature")
    before = estimate(spec, None, CONFIG)
    after = estimate(spec, None, CONFIG, tokens=TokenCalibration(factors={"feature": 2.0}))
    assert after.tokens.output_tokens == 2 * before.tokens.output_tokens


@pytest.mark.parametrize("dated", [True, False])
def test_history_order_decides_the_model_not_ids(dated: bool) -> None:
    """The same rows in the same order give the same estimates, whatever their ids sort as."""
    history = predictable(120)
    renamed = [
        HistoricalTask(f"XD-{999 + i}" if dated else f"XD-{i}", t.title, t.description, p)
        for i, t in enumerate(history)
        for p in (t.story_points,)
    ]
    a = build_workspace(history, (), CONFIG)
    b = build_workspace(renamed, (), CONFIG)
    assert a.points is not None and b.points is not None
    assert a.points.fit == b.points.fit


def test_the_nearest_past_tasks_vote_with_their_points() -> None:
    """Each of the k most similar past tasks votes 1/k for its value; where fewer than k
    share a word with the query, the rest of the k vote as the history does."""
    import scipy.sparse as sp

    from services.estimator.points_model import _neighbour_votes

    sims = sp.csr_matrix(np.array([[0.9, 0.1, 0.8, 0.0], [0.0, 0.0, 0.0, 0.7]]))
    codes = np.array([0, 1, 2, 2])  # past tasks' point values, as indices of the scale
    prior = np.array([0.25, 0.25, 0.5])
    votes = _neighbour_votes(sims, codes, prior, 2, 2)
    assert votes[0].tolist() == [0.5, 0.0, 0.5]  # tasks 0 and 2, the two nearest
    assert votes[1].tolist() == [0.125, 0.125, 0.75]  # task 3, then the history's share
    assert np.allclose(votes.sum(axis=1), 1.0)


def test_shares_that_leave_nothing_for_the_history_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"neighbour_share \+ points\.classifier_share"):
        PointsConfig(neighbour_share=0.8, classifier_share=0.3)
