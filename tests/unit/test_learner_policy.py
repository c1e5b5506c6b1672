from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.learner.policy import Checkpoint, Checkpointer, RoutingPolicy, credit


def test_new_policy_is_uniform_and_probabilities_sum_to_one():
    policy = RoutingPolicy(["a", "b", "c", "d"])
    probs = policy.probabilities("feature", "medium")
    assert probs == pytest.approx({"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25})


def test_update_moves_probability_toward_higher_reward_net_of_cost():
    policy = RoutingPolicy(["cheap", "pricey"], cost_weight=0.5)
    # Same reward, but "pricey" costs ten times as much: the cheap model wins the group.
    for _ in range(5):
        policy.update("feature", "medium", [("cheap", 0.9, 0.1), ("pricey", 0.9, 1.0)])
    probs = policy.probabilities("feature", "medium")
    assert probs["cheap"] > 0.7
    assert policy.best("feature", "medium") == "cheap"
    # Other task types are untouched.
    assert policy.probabilities("docs", "simple") == pytest.approx({"cheap": 0.5, "pricey": 0.5})


def test_reward_beats_cost_when_quality_gap_is_large():
    policy = RoutingPolicy(["cheap", "pricey"], cost_weight=0.3)
    policy.update("feature", "complex", [("cheap", 0.0, 0.1), ("pricey", 1.0, 1.0)])
    assert policy.best("feature", "complex") == "pricey"


def test_each_update_is_clipped():
    policy = RoutingPolicy(["a", "b"], learning_rate=10.0, clip=0.2)
    steps = policy.update("t", "simple", [("a", 1.0, 0.0), ("b", 0.0, 0.0)])
    assert steps == {"a": 0.2, "b": -0.2}
    assert policy.logits("t", "simple") == {"a": 0.2, "b": -0.2}


def test_equal_group_changes_nothing():
    policy = RoutingPolicy(["a", "b"])
    assert policy.update("t", "simple", [("a", 0.5, 1.0), ("b", 0.5, 1.0)]) == {"a": 0.0, "b": 0.0}
    assert policy.probabilities("t", "simple") == {"a": 0.5, "b": 0.5}


def test_exploration_floor_holds_after_many_updates():
    policy = RoutingPolicy(["a", "b", "c"], floor=0.3, clip=1.0, learning_rate=5.0)
    for _ in range(200):
        policy.update("t", "simple", [("a", 1.0, 0.0), ("b", 0.0, 0.0), ("c", 0.0, 0.0)])
    probs = policy.probabilities("t", "simple")
    assert sum(probs.values()) == pytest.approx(1.0)
    assert min(probs.values()) >= 0.3 / 3 - 1e-12
    assert probs["a"] == pytest.approx(0.8, abs=1e-6)


def test_choose_samples_by_probability_and_is_reproducible():
    policy = RoutingPolicy(["a", "b"], floor=0.2, clip=5.0, learning_rate=5.0)
    for _ in range(5):
        policy.update("t", "simple", [("a", 1.0, 0.0), ("b", 0.0, 0.0)])
    picks = [policy.choose("t", "simple", np.random.default_rng(s)) for s in range(2000)]
    share_b = picks.count("b") / len(picks)
    assert share_b == pytest.approx(policy.probabilities("t", "simple")["b"], abs=0.03)
    assert share_b >= 0.08  # the floor keeps b explored
    again = [policy.choose("t", "simple", np.random.default_rng(s)) for s in range(2000)]
    assert again == picks


def test_checkpoint_round_trip_restores_behaviour():
    policy = RoutingPolicy(["a", "b"], floor=0.05)
    policy.update("feature", "complex", [("a", 0.2, 0.5), ("b", 0.9, 0.5), ("c", 0.1, 0.0)])
    restored = RoutingPolicy.from_dict(policy.to_dict())
    assert restored.models == ["a", "b", "c"]
    assert restored.probabilities("feature", "complex") == policy.probabilities(
        "feature", "complex"
    )
    assert restored.floor == 0.05


def test_credit_discounts_later_success_to_earlier_attempts():
    assert credit([0.0, 0.0, 1.0], gamma=0.5) == [0.25, 0.5, 1.0]
    assert credit([0.3, 1.0], gamma=0.9) == [1.0, 1.0]  # stays within [0, 1]
    assert credit([0.0, 1.0], gamma=0.0) == [0.0, 1.0]
    with pytest.raises(ValueError, match="gamma"):
        credit([1.0], gamma=1.5)


T0 = datetime(2025, 1, 1, tzinfo=UTC)


def checkpoints(scores):
    return [Checkpoint(f"c{i}", T0 + timedelta(hours=i), s) for i, s in enumerate(scores)]


def test_retention_keeps_best_five_by_score():
    items = checkpoints([0.1, 0.9, 0.5, 0.7, 0.3, 0.8, 0.6, 0.95])
    kept = Checkpointer().retain(items)
    assert [c.id for c in kept] == ["c7", "c1", "c5", "c3", "c6"]
    assert {c.id for c in Checkpointer().pruned(items)} == {"c0", "c2", "c4"}


def test_retention_protects_latest_so_resume_continues_where_it_stopped():
    items = checkpoints([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, None])
    kept = Checkpointer().retain(items)
    assert [c.id for c in kept] == ["c0", "c1", "c2", "c3", "c4", "c6"]
    assert Checkpointer().resume_from(kept).id == "c6"
    strict = Checkpointer(protect_latest=False).retain(items, keep=2)
    assert [c.id for c in strict] == ["c0", "c1"]
    assert Checkpointer.resume_from(strict).id == "c1"
    assert Checkpointer.resume_from([]) is None


def test_every_run_moves_the_policy_before_any_group_update():
    policy = RoutingPolicy(["a", "b", "c"], floor=0.0)
    for _ in range(8):
        policy.observe("t", "simple", "a", 1.0, 1.0)
        policy.observe("t", "simple", "b", 0.0, 1.0)
    probs = policy.probabilities("t", "simple")
    assert probs["a"] > 0.6 and probs["b"] < 0.05
    assert ("t", "simple") in policy.classes()


def test_a_class_with_few_runs_borrows_the_models_workspace_wide_record():
    policy = RoutingPolicy(["a", "b"], floor=0.0)
    # "a" beats "b" on other task types; the new type has seen one run of each, a tie.
    for _ in range(30):
        policy.observe("other", "simple", "a", 1.0, 1.0)
        policy.observe("other", "simple", "b", 0.0, 1.0)
    policy.observe("new", "simple", "a", 0.0, 1.0)
    policy.observe("new", "simple", "b", 0.0, 1.0)
    assert policy.probabilities("new", "simple")["a"] > 0.9
    # Enough runs of the class itself outweigh the pooled prior.
    for _ in range(40):
        policy.observe("new", "simple", "a", 0.0, 1.0)
        policy.observe("new", "simple", "b", 1.0, 1.0)
    assert policy.probabilities("new", "simple")["b"] > 0.9


def test_thompson_share_prefers_the_cheaper_of_equal_models():
    policy = RoutingPolicy(["cheap", "pricey"], floor=0.0, cost_weight=0.5)
    for _ in range(20):
        policy.observe("t", "simple", "cheap", 1.0, 0.1)
        policy.observe("t", "simple", "pricey", 1.0, 1.0)
    assert policy.thompson("t", "simple")["cheap"] > 0.95


def test_checkpoint_keeps_the_evidence():
    policy = RoutingPolicy(["a", "b"])
    policy.observe("t", "simple", "a", 1.0, 0.5)
    policy.observe("t", "complex", "b", 0.0, 2.0)
    restored = RoutingPolicy.from_dict(policy.to_dict())
    assert restored.classes() == policy.classes()
    assert restored.probabilities("t", "simple") == policy.probabilities("t", "simple")
    assert restored.posterior("t", "complex") == policy.posterior("t", "complex")
