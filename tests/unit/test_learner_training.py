"""Training the routing policy from runs: groups, held-out tasks, credit, evaluation."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from services.learner.abtest import is_held_out
from services.learner.daily import seconds_until
from services.learner.policy import RoutingPolicy
from services.learner.reports import accuracy, changes, experiment_summary, model_comparison
from services.learner.stats import ModelScore, RunOutcome, update
from services.learner.training import LearnedRun, PolicyTrainer, credited, evaluate, retrain

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trained_ids(n: int, held: bool = False) -> list[str]:
    """Task ids on the requested side of the 20% held-out split."""
    ids = (f"task-{i}" for i in range(10_000))
    return [t for t in ids if is_held_out(t, 0.2) == held][:n]


def run(
    task_id: str, model: str, reward: float, cost: float, i: int = 0, **kw: object
) -> LearnedRun:
    fields = {"task_type": "feature", "band": "medium", "attempt": 1, **kw}
    return LearnedRun(
        f"r-{task_id}-{model}-{i}",
        task_id,
        model,
        reward=reward,
        cost_usd=cost,
        at=T0 + timedelta(minutes=i),
        **fields,
    )  # type: ignore[arg-type]


def test_policy_updates_once_a_group_is_full_and_favours_the_cheap_winner() -> None:
    trainer = PolicyTrainer(RoutingPolicy(["cheap", "pricey"]), group_size=4)
    ids = trained_ids(40)
    steps = []
    for i in range(0, 40, 2):
        steps.append(trainer.observe(run(ids[i], "cheap", 1.0, 0.1, i)))
        steps.append(trainer.observe(run(ids[i + 1], "pricey", 1.0, 2.0, i + 1)))
    assert sum(s is not None for s in steps) == 10 == trainer.version
    probs = trainer.probabilities()["feature|medium"]
    assert probs["cheap"] > 0.8 > 0.2 > probs["pricey"]


def test_held_out_tasks_count_as_evidence_but_never_move_preferences() -> None:
    trainer = PolicyTrainer(RoutingPolicy(["a", "b"]), group_size=2)
    for i, task in enumerate(trained_ids(6, held=True)):
        assert trainer.observe(run(task, "a" if i % 2 else "b", float(i % 2), 0.1, i)) is None
    assert trainer.version == 0
    assert trainer.policy.logits("feature", "medium") == {"a": 0.0, "b": 0.0}
    # ... yet routing learns from every run: "a" solved its three, "b" none.
    post = trainer.posteriors()["feature|medium"]
    assert post["a"][0] > post["b"][0]


def test_unknown_model_joins_the_policy() -> None:
    trainer = PolicyTrainer(RoutingPolicy(["a"]), group_size=2)
    trainer.observe(run(trained_ids(1)[0], "new", 1.0, 0.1))
    assert "new" in trainer.policy.models


def test_group_size_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="group_size"):
        PolicyTrainer(RoutingPolicy(["a"]), group_size=1)


def test_earlier_attempts_share_the_later_success() -> None:
    runs = [
        run("t1", "weak", 0.0, 0.1, 0, attempt=1),
        run("t1", "strong", 1.0, 1.0, 1, attempt=2),
        run("t2", "weak", 1.0, 0.1, 2),
    ]
    out = credited(runs, gamma=0.5)
    assert [r.reward for r in out] == [0.5, 1.0, 1.0]


def test_retrain_and_evaluation_beat_uniform_on_held_out_tasks() -> None:
    runs = []
    for i, task in enumerate(trained_ids(60) + trained_ids(20, held=True)):
        runs.append(run(task, "good", 1.0, 0.2, 2 * i))
        runs.append(run(task, "bad", 0.0, 0.5, 2 * i + 1))
    trainer = retrain(
        runs, RoutingPolicy(["good", "bad"]), group_size=4, held_out_share=0.2, gamma=0.9
    )
    result = evaluate(trainer.policy, runs, 0.2)
    assert result.runs == 40 and result.best_model == "good"
    assert result.uniform is not None and result.policy is not None
    assert result.best_single is not None
    assert result.uniform < result.policy <= result.best_single


def test_daily_time_is_next_occurrence() -> None:
    now = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    assert seconds_until(time(3, 0), now) == 3600
    assert seconds_until(time(1, 0), now) == 23 * 3600


def test_reports_compare_models_and_arms() -> None:
    fast = ModelScore("fast", "feature", "medium")
    slow = ModelScore("slow", "feature", "complex")
    for _ in range(3):
        fast = update(fast, RunOutcome("fast", "feature", "medium", 5, 1.0, True, 0.9, 0.1, 100))
        slow = update(slow, RunOutcome("slow", "feature", "complex", 5, 5.0, True, 0.6, 1.0, 900))
    rows = model_comparison([slow, fast])
    assert [r["model"] for r in rows] == ["fast", "slow"]
    assert rows[0]["velocity_mean"] == 5.0 and rows[0]["best_band"] == "medium"
    assert rows[0]["cost_per_point"] == pytest.approx(0.1 / 5)

    arms = [
        {
            "arm": "A",
            "reward": 1.0 - (i % 2) * 0.1,
            "quality": 0.9,
            "cost_usd": 0.1,
            "success": True,
        }
        for i in range(40)
    ]
    arms += [
        {
            "arm": "B",
            "reward": 0.2 + (i % 2) * 0.1,
            "quality": 0.5,
            "cost_usd": 0.3,
            "success": False,
        }
        for i in range(40)
    ]
    summary = experiment_summary(arms, min_samples=30)
    verdicts = {c["metric"]: c["verdict"] for c in summary["comparisons"]}
    assert verdicts["reward"] == "A better"
    assert summary["arms"]["A"]["runs"] == 40


def test_accuracy_and_changes() -> None:
    logs = [{"error_pct": 50.0}] * 20 + [{"error_pct": -10.0}] * 20
    acc = accuracy(logs)
    assert acc == {
        "tasks": 20,
        "mean_error_pct": 10.0,
        "previous_error_pct": 50.0,
        "improving": True,
    }
    moved = changes({"x|y": {"a": 0.5, "b": 0.5}}, {"x|y": {"a": 0.8, "b": 0.2}})
    assert moved["x|y"] == {"max_shift": 0.3, "favourite_before": "a", "favourite_after": "a"}


def test_runs_shape_the_published_probabilities_between_group_updates() -> None:
    trainer = PolicyTrainer(RoutingPolicy(["a", "b"], floor=0.0), group_size=50)
    ids = trained_ids(20)
    for i in range(0, 20, 2):
        assert trainer.observe(run(ids[i], "a", 1.0, 0.5, i)) is None
        assert trainer.observe(run(ids[i + 1], "b", 0.0, 0.5, i + 1)) is None
    assert trainer.version == 0
    assert trainer.probabilities()["feature|medium"]["a"] > 0.9


def test_a_revised_cost_moves_the_evidence_and_a_waiting_run_but_not_the_outcome():
    trainer = PolicyTrainer(RoutingPolicy(["a", "b"]), group_size=3, held_out_share=0.0)
    first = LearnedRun("r1", "t1", "a", "feature", "medium", 1.0, 0.02, datetime.now(UTC))
    trainer.observe(first)
    trainer.observe(LearnedRun("r2", "t2", "a", "feature", "medium", 0.0, 0.04, datetime.now(UTC)))
    before = trainer.to_state()["policy"]["overall"]["a"]
    trainer.revise_cost(first, 0.05)
    runs, reward, cost = trainer.to_state()["policy"]["overall"]["a"]
    assert (runs, reward) == (before[0], before[1])
    assert cost == pytest.approx(0.02 + 0.04 + 0.03)
    (group,) = trainer.pending.values()
    assert [r.cost_usd for r in group] == [0.05, 0.04]
    # A run after a failure is revised in the evidence of later attempts only.
    retry = LearnedRun(
        "r3", "t1", "b", "feature", "medium", 1.0, 0.10, datetime.now(UTC), attempt=2
    )
    trainer.observe(retry)
    trainer.revise_cost(retry, 0.30)
    assert trainer.to_state()["policy"]["retry_overall"]["b"][2] == pytest.approx(0.30)
    assert "b" not in trainer.to_state()["policy"]["overall"]


async def test_a_workspace_that_fails_its_daily_pass_holds_up_no_other() -> None:
    from types import SimpleNamespace

    from services.learner.daily import DailyPass, DailyPassFailed

    async def workspaces() -> list[str]:
        return ["ws-broken", "ws-fine"]

    daily = DailyPass(SimpleNamespace(repo=SimpleNamespace(workspaces=workspaces)))  # type: ignore[arg-type]
    relearned: list[str] = []

    async def relearn(workspace: str) -> dict[str, object]:
        if workspace == "ws-broken":
            raise RuntimeError("simulated failure")
        relearned.append(workspace)
        return {}

    daily.relearn = relearn  # type: ignore[method-assign]
    with pytest.raises(DailyPassFailed, match="ws-broken"):
        await daily.relearn_all()
    assert relearned == ["ws-fine"]
