"""How the learned routing spends: fallbacks priced in, exploration that shrinks, evidence
after a failure that starts hopeful, and task classes pooled only as far as they differ."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from services.assigner.selection import (
    FULL_SPREAD_RUNS,
    Candidate,
    drawn_values,
    expected_values,
)
from services.learner.policy import MAX_POOLING, RoutingPolicy
from tally.registry import ModelSpec


def spec(name: str) -> ModelSpec:
    return ModelSpec.model_validate(
        {
            "name": name,
            "provider": "p",
            "tier": "standard",
            "prices": {"input": 1.0, "output": 1.0},
            "context_window": 100_000,
            "subscription": "s",
        }
    )


CANDS = [Candidate(spec(m), 0.9, 0.0, 0) for m in ("cheap", "strong")]
#: Well measured: cheap solves 40% at $1 and 10% after strong failed; strong solves 50%
#: at $5 and 30% after cheap failed ([alpha, beta, alpha after, beta after, cost]).
ROWS: dict[str, list[float | None]] = {
    "cheap": [400.0, 600.0, 100.0, 900.0, 1.0],
    "strong": [500.0, 500.0, 300.0, 700.0, 5.0],
}


def firsts(attempts_left: int) -> Counter[str]:
    picks: Counter[str] = Counter()
    for seed in range(200):
        ev = expected_values(
            CANDS,
            ROWS,
            value_usd=100.0,
            after_failure=False,
            seed=seed,
            attempts_left=attempts_left,
        )
        picks[max(ev, key=ev.__getitem__)] += 1
    return picks


def test_a_cheap_model_with_a_strong_one_to_fall_back_on_goes_first() -> None:
    # Alone, strong is worth more ($45 against $39); with a second attempt allowed,
    # "cheap, then strong" ($39 + 0.6 x $25) beats "strong, then cheap" ($45 + 0.5 x $9).
    assert firsts(attempts_left=0)["strong"] == 200
    assert firsts(attempts_left=1)["cheap"] == 200


def test_exploration_is_a_share_of_the_posterior_spread_and_shrinks_with_evidence() -> None:
    rows = [(3.0, 3.0, 1.0, 1.0, 0.0), (300.0, 300.0, 1.0, 1.0, 0.0)]

    def spread(exploration: float) -> np.ndarray:
        draws = drawn_values(
            rows,
            value_usd=1.0,
            after_failure=False,
            attempts_left=0,
            rng=np.random.default_rng(7),
            size=4000,
            exploration=exploration,
        )
        return np.asarray(draws.std(axis=0))

    plain, scaled, greedy = spread(1.0), spread(0.35), spread(0.0)
    # 6 runs: most of the posterior's spread kept, so an unlucky start is tried again;
    # 600 runs: the set share of it.
    assert scaled[0] == pytest.approx(plain[0] / (1 + 6 / FULL_SPREAD_RUNS) ** 0.5, rel=1e-6)
    assert scaled[1] == pytest.approx(0.35 * plain[1], rel=1e-6)
    # Without a set share, the thinning alone: 1 / sqrt(1 + runs / FULL_SPREAD_RUNS).
    assert greedy[1] == pytest.approx(plain[1] / (1 + 600 / FULL_SPREAD_RUNS) ** 0.5, rel=1e-6)
    assert scaled[1] < scaled[0] / 10  # 100 times the evidence: under a tenth of the spread


def test_escalation_is_tried_before_it_has_evidence_and_stops_where_it_does_not_pay() -> None:
    policy = RoutingPolicy(["a", "b"])
    for _ in range(30):  # first attempts: b solves 1 in 3
        policy.observe("bug", "medium", "b", 0.0, 5.0)
        policy.observe("bug", "medium", "b", 0.0, 5.0)
        policy.observe("bug", "medium", "b", 1.0, 5.0)
    rows = policy.rows("bug", "medium")
    cands = [Candidate(spec("b"), 0.9, 0.0, 0)]
    hopeful = expected_values(cands, rows, value_usd=20.0, after_failure=True, seed=3)
    assert rows["b"][2] == rows["b"][3]  # unmeasured after a failure: even odds
    assert hopeful["b"] > 0  # so the first failures are escalated, and measured
    for _ in range(40):  # after a failure, b never rescues a task
        policy.observe("bug", "medium", "b", 0.0, 5.0, attempt=2)
    rows = policy.rows("bug", "medium")
    later = [
        expected_values(cands, rows, value_usd=20.0, after_failure=True, seed=s)["b"]
        for s in range(50)
    ]
    assert max(later) < 0


def test_classes_that_differ_little_pool_strongly_and_ones_that_differ_speak_for_themselves():
    alike, apart = RoutingPolicy(["m"]), RoutingPolicy(["m"])
    rng = np.random.default_rng(1)
    for kind in range(10):
        for _ in range(60):
            alike.observe(f"t{kind}", "medium", "m", float(rng.random() < 0.4), 1.0)
            rate = 0.1 if kind % 2 else 0.8
            apart.observe(f"t{kind}", "medium", "m", float(rng.random() < rate), 1.0)
    assert alike.pooling() > 50
    assert apart.pooling() < 5
    assert RoutingPolicy(["m"], pool_strength=10.0).pooling() == 10.0
    assert RoutingPolicy(["m"]).pooling() <= MAX_POOLING
    # A thin new class of a workspace whose classes differ borrows little ...
    for _ in range(3):
        apart.observe("new", "medium", "m", 1.0, 1.0)
        alike.observe("new", "medium", "m", 1.0, 1.0)
    mean = {
        name: p.rows("new", "medium")["m"][0] / sum(p.rows("new", "medium")["m"][:2])  # type: ignore[operator]
        for name, p in (("apart", apart), ("alike", alike))
    }
    # ... so three solves move it far; where classes are alike they barely do.
    assert mean["apart"] > 0.6 and mean["alike"] < 0.5
