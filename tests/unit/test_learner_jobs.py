"""Learning jobs without servers: rewards and groups, iterations, off-policy evaluation,
and the propensity the assigner logs with each choice."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.assigner.selection import RoutingTable, first_choice_propensity, rank
from services.learner.jobs import engine, evaluation
from services.learner.policy import RoutingPolicy
from services.learner.rewards import default_registry
from services.learner.training import LearnedRun
from tally.events.jobs import JobConfig
from tests.unit.test_assigner_selection import MODELS, estimate

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def recorded(n: int = 80, propensity: float | None = 0.5) -> list[engine.RecordedRun]:
    """``good`` succeeds four times in five, ``bad`` one time in three; same cost."""
    out = []
    for i in range(n):
        model = "good" if i % 2 else "bad"
        success = (i % 5 != 0) if model == "good" else (i % 3 == 0)
        run = LearnedRun(
            f"r{i}", f"t{i}", model, "feature", "medium", 0.0, 0.1, NOW - timedelta(hours=i)
        )
        out.append(engine.RecordedRun(run, success, 100, 1.0, None, propensity))
    return out


def test_the_configuration_refuses_bad_values_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="reward_weights: unknown weight 'bonus'"):
        JobConfig(reward_weights={"bonus": 1.0})
    with pytest.raises(ValidationError, match="window"):
        JobConfig(window="30 days")
    with pytest.raises(ValidationError, match="task_classes"):
        JobConfig(task_classes=("a|b|c",))


def test_job_runs_are_rewarded_by_the_jobs_function_and_filtered() -> None:
    config = JobConfig(reward="binary", models=("good",))
    runs = engine.job_runs(recorded(), config, default_registry().get("binary"))
    assert {r.run.model for r in runs} == {"good"}
    assert all(r.run.reward == float(r.success) for r in runs)
    assert any(r.held_out for r in runs) and not all(r.held_out for r in runs)


def test_advantages_are_group_normalised_within_each_class() -> None:
    runs = engine.job_runs(recorded(), JobConfig(), default_registry().get("binary"))
    adv = engine.advantages(runs, cost_weight=0.0)
    assert abs(sum(adv.values())) < 1e-9
    best = max(runs, key=lambda r: adv[r.run.run_id])
    assert best.success


def test_iterations_move_the_policy_toward_the_better_model_deterministically() -> None:
    config = JobConfig(lr=0.5, iterations=20, seed=7)
    runs = engine.job_runs(recorded(), config, default_registry().get("binary"))
    classes = engine.by_class(runs)

    def train() -> RoutingPolicy:
        trainer = engine.candidate(["good", "bad"], config, runs)
        for it in range(1, 21):
            stats = engine.iterate(trainer, classes, config, it)
        assert stats.iteration == 20 and stats.groups == 1
        assert trainer.version == 20
        return trainer.policy

    first, again = train(), train()
    logits = first.logits("feature", "medium")
    assert logits["good"] > logits["bad"]
    assert again.logits("feature", "medium") == logits  # same seed, same draws: resumable


def test_snips_recovers_a_policys_value_from_logged_propensities() -> None:
    runs = engine.job_runs(
        recorded(400), JobConfig(eval_share=0.5), default_registry().get("binary")
    )
    held = [r for r in runs if r.held_out]
    only_good = evaluation.off_policy(lambda t, b: {"good": 1.0}, held)
    truth = sum(r.success for r in held if r.run.model == "good") / sum(
        1 for r in held if r.run.model == "good"
    )
    assert only_good.reward == pytest.approx(truth, abs=1e-6)
    assert only_good.method == "snips" and only_good.runs == len(held)


def test_the_evaluation_compares_candidate_live_and_baselines_with_a_p_value() -> None:
    config = JobConfig(eval_share=0.5)
    runs = engine.job_runs(recorded(400), config, default_registry().get("binary"))
    trainer = engine.candidate(["good", "bad"], config, runs)
    for it in range(1, 30):
        engine.iterate(trainer, engine.by_class(runs), config, it)
    judged = evaluation.evaluate(trainer.policy, None, runs, alpha=0.05)
    assert set(judged["policies"]) == {"candidate", "live", "uniform", "best_single"}
    assert judged["best_model"] == "good"
    assert judged["policies"]["candidate"]["reward"] > judged["policies"]["uniform"]["reward"]
    assert 0.0 <= judged["comparison"]["p_value"] <= 1.0
    head = evaluation.summary(judged)
    assert head["reward"]["candidate"] == judged["policies"]["candidate"]["reward"]


def test_without_propensities_the_direct_estimate_stands_in_and_says_so() -> None:
    config = JobConfig(eval_share=0.5)
    runs = engine.job_runs(recorded(200, propensity=None), config, default_registry().get("binary"))
    judged = evaluation.evaluate(RoutingPolicy(["good", "bad"]), None, runs, alpha=0.05)
    assert judged["method"] == "direct"
    assert judged["logged_runs"] == 0
    assert judged["without_propensity"] == judged["held_out_runs"] > 0


def test_the_logged_propensity_matches_how_often_the_learned_strategy_chooses() -> None:
    est = estimate(50)
    names = [c.model.name for c in rank("cheapest_capable", MODELS, est)]
    posteriors = {"*|*": {n: [3.0 + 2 * i, 3.0, 1.0, 1.0, 0.01] for i, n in enumerate(names)}}
    policy = RoutingTable(1, {}, tuple(names), posteriors)
    firsts = Counter(
        rank("learned", MODELS, est, policy=policy, seed=seed, value_usd=10.0)[0].model.name
        for seed in range(600)
    )
    cands = rank("learned", MODELS, est, policy=policy, seed=0, value_usd=10.0)
    for name in names:
        p = first_choice_propensity(name, cands, est, policy=policy, value_usd=10.0)
        assert p == pytest.approx(firsts[name] / 600, abs=0.06), name
    assert first_choice_propensity(names[0], cands, est, policy=None, value_usd=10.0) == 1.0
