"""The learned routing policy drives the ``learned`` strategy: restricted, seeded, repeatable."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.assigner.selection import (
    RoutingTable,
    rank,
    restricted,
    route_seed,
    sampled_order,
)
from tally.events import Estimate, TokenEstimate
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR

MODELS = ModelRegistry(CONFIG_DIR / "models.yaml").models()
NAMES = [m.name for m in MODELS]


def estimate(task_type: str = "feature", band: str = "simple") -> Estimate:
    return Estimate(
        title="t",
        priority="P2",
        labels=("backend",),
        task_type=task_type,
        story_points=2,
        band=band,  # type: ignore[arg-type]
        hours_p50=1,
        hours_p90=2,
        tokens=TokenEstimate(input_tokens=2_000, output_tokens=500),
        value_score=50,
    )


def policy(probs: dict[str, float], key: str = "feature|simple") -> RoutingTable:
    return RoutingTable(version=3, probabilities={key: probs}, models=tuple(NAMES))


def firsts(table: RoutingTable, n: int = 2000, est: Estimate | None = None) -> Counter[str]:
    est = est or estimate()
    return Counter(
        rank("learned", MODELS, est, policy=table, seed=route_seed(f"T-{i}", 1))[0].model.name
        for i in range(n)
    )


def test_the_same_task_and_attempt_always_get_the_same_model() -> None:
    table = policy({n: 1 / len(NAMES) for n in NAMES})
    for i in range(50):
        orders = {
            tuple(c.model.name for c in rank("learned", MODELS, estimate(), policy=table, seed=s))
            for s in [route_seed(f"T-{i}", 2)] * 3
        }
        assert len(orders) == 1


def test_the_seed_depends_on_the_attempt() -> None:
    assert route_seed("T-1", 1) != route_seed("T-1", 2)
    assert route_seed("T-1", 1) == route_seed("T-1", 1)


def test_first_choices_follow_the_policy_probabilities() -> None:
    favourite, other = NAMES[0], NAMES[1]
    probs = {n: 0.0 for n in NAMES} | {favourite: 0.8, other: 0.2}
    counts = firsts(policy(probs))
    assert set(counts) == {favourite, other}
    assert 0.75 < counts[favourite] / 2000 < 0.85


def test_after_the_draw_the_rest_follow_by_probability() -> None:
    probs = {n: 0.01 for n in NAMES} | {NAMES[0]: 0.5, NAMES[1]: 0.3, NAMES[2]: 0.1}
    for i in range(30):
        order = [
            c.model.name
            for c in rank(
                "learned", MODELS, estimate(), policy=policy(probs), seed=route_seed(f"T-{i}", 1)
            )
        ]
        rest = order[1:]
        ranks = [probs[n] for n in rest]
        assert ranks == sorted(ranks, reverse=True)
        assert sorted(order) == sorted(NAMES)


def test_probabilities_are_restricted_to_the_candidates_and_renormalised() -> None:
    probs = restricted({"a": 0.6, "b": 0.2, "gone": 0.2}, ["a", "b"], known=3)
    assert probs == pytest.approx({"a": 0.75, "b": 0.25})


def test_a_candidate_the_policy_does_not_know_gets_one_over_the_model_count() -> None:
    probs = restricted({"a": 0.5, "b": 0.5}, ["a", "b", "new"], known=4)
    # "new" gets 1/4 before renormalising: 0.25 / 1.25.
    assert probs["new"] == pytest.approx(0.2)
    assert sum(probs.values()) == pytest.approx(1.0)


def test_a_model_that_fails_the_filters_is_never_drawn_however_likely() -> None:
    weak = min(MODELS, key=lambda m: m.capability("feature", "backend"))
    probs = {n: 0.01 for n in NAMES} | {weak.name: 0.9}
    counts = firsts(policy(probs), n=300, est=estimate(band="complex"))
    assert weak.name not in counts


def test_without_a_table_for_the_class_the_score_ranking_applies() -> None:
    table = policy({NAMES[-1]: 1.0}, key="docs|complex")
    with_policy = rank("learned", MODELS, estimate(), policy=table, seed=7)
    without = rank("learned", MODELS, estimate())
    assert [c.model.name for c in with_policy] == [c.model.name for c in without]


@given(
    st.dictionaries(
        st.sampled_from(NAMES), st.floats(min_value=0, max_value=1), min_size=1, max_size=6
    ),
    st.integers(min_value=0, max_value=2**64 - 1),
)
def test_the_order_is_a_permutation_of_the_candidates(probs: dict[str, float], seed: int) -> None:
    shares = restricted(probs, NAMES, known=len(NAMES))
    assert sum(shares.values()) == pytest.approx(1.0)
    assert sorted(sampled_order(shares, seed)) == sorted(NAMES)
