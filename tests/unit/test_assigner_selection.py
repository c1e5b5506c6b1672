"""Choosing models: value decides premium, escalation goes stronger, A/B arms are stable."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.assigner.escalation import escalation_order
from services.assigner.experiments import experiment_for, pick_arm
from services.assigner.selection import rank
from tally.cli.assign import parse_variants
from tally.events import Estimate, TokenEstimate
from tally.events.assign import Experiment, Variant
from tally.registry import ModelRegistry
from tally.settings import CONFIG_DIR

MODELS = ModelRegistry(CONFIG_DIR / "models.yaml").models()
BY_NAME = {m.name: m for m in MODELS}


def estimate(value: float, band: str = "medium", task_type: str = "feature") -> Estimate:
    return Estimate(
        title="t",
        priority="P2",
        labels=("backend",),
        task_type=task_type,
        story_points=5,
        band=band,  # type: ignore[arg-type]
        hours_p50=2,
        hours_p90=4,
        tokens=TokenEstimate(input_tokens=30_000, output_tokens=6_000),
        value_score=value,
    )


def test_a_high_value_task_ranks_a_premium_model_first() -> None:
    ranked = rank("maximize_value", MODELS, estimate(90, band="complex"))
    assert ranked[0].model.tier == "premium"


@given(st.floats(min_value=0, max_value=29.99), st.sampled_from(["simple", "medium", "complex"]))
def test_a_low_value_task_never_gets_a_premium_model(value: float, band: str) -> None:
    ranked = rank("maximize_value", MODELS, estimate(value, band=band))
    assert all(c.model.tier != "premium" for c in ranked)


def test_escalation_goes_to_the_next_tier_up_and_never_back_to_a_failed_model() -> None:
    est = estimate(45)
    ranked = rank("cheapest_capable", MODELS, est)
    failed = BY_NAME["gpt-5-mini"]
    order = escalation_order(
        ranked, failed, {"gpt-5-mini"}, failed.capability("feature", "backend")
    )
    names = [c.model.name for c in order]
    assert "gpt-5-mini" not in names
    assert order[0].model.tier == "standard"  # economy -> standard before premium
    tiers = [c.model.tier for c in order]
    assert tiers.index("premium") < tiers.index("economy")  # stronger ones before the rest


def test_escalation_from_the_strongest_model_falls_back_to_the_strategy_order() -> None:
    ranked = rank("quality_first", MODELS, estimate(45))
    top = BY_NAME["claude-opus-4"]
    order = escalation_order(ranked, top, {"claude-opus-4"}, top.capability("feature", "backend"))
    assert [c.model.name for c in order] == [
        c.model.name for c in ranked if c.model.name != "claude-opus-4"
    ]


EXP = Experiment(
    name="learned-vs-cheap",
    variants=(
        Variant(name="A", strategy="learned", weight=50),
        Variant(name="B", strategy="cheapest_capable", weight=50),
    ),
)


def test_arms_are_a_function_of_the_task_id_and_follow_the_split() -> None:
    ids = [f"task-{i}" for i in range(4_000)]
    arms = [pick_arm(EXP, t).name for t in ids]
    assert arms == [pick_arm(EXP, t).name for t in ids]  # same id, same arm, every time
    counts = Counter(arms)
    assert 1_850 < counts["A"] < 2_150  # 50/50 within ~5 standard deviations

    a, b = EXP.variants
    skewed = EXP.model_copy(
        update={
            "variants": (a.model_copy(update={"weight": 90}), b.model_copy(update={"weight": 10}))
        }
    )
    share = sum(pick_arm(skewed, t).name == "A" for t in ids) / len(ids)
    assert 0.87 < share < 0.93


def test_arms_of_two_experiments_are_independent() -> None:
    other = EXP.model_copy(update={"name": "another"})
    pairs = Counter(
        (pick_arm(EXP, f"t{i}").name, pick_arm(other, f"t{i}").name) for i in range(4000)
    )
    for pair in itertools.product("AB", repeat=2):
        assert 850 < pairs[pair] < 1150


def test_an_experiment_for_the_task_type_wins_over_one_for_all_types() -> None:
    docs = EXP.model_copy(update={"name": "docs-only", "task_type": "docs"})
    assert experiment_for([EXP, docs], "docs") == docs
    assert experiment_for([EXP, docs], "feature") == EXP
    stopped = EXP.model_copy(update={"active": False})
    assert experiment_for([stopped], "feature") is None


def test_variants_parse_from_the_command_line_with_their_split() -> None:
    variants = parse_variants(["A:strategy=learned", "B:strategy=cheapest_capable"], "70/30")
    assert [(v.name, v.strategy, v.weight) for v in variants] == [
        ("A", "learned", 70),
        ("B", "cheapest_capable", 30),
    ]
    with pytest.raises(ValueError, match="--split"):
        parse_variants(["A:strategy=learned", "B:strategy=learned"], "50/30/20")
    with pytest.raises(ValueError, match="NAME:strategy=STRATEGY"):
        parse_variants(["A=learned", "B:strategy=learned"], None)
