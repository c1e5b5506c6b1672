import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.learner.rewards import (
    RewardRangeError,
    RewardRegistry,
    RewardSelection,
    RunSignals,
    ShapingConfig,
    UnknownRewardError,
    default_registry,
    group_advantages,
    shaped_reward,
)


def test_a_failure_earns_nothing_however_busy_it_was():
    assert shaped_reward(RunSignals(success=True)) == 1.0
    assert shaped_reward(RunSignals(success=False)) == 0.0
    used_tools = RunSignals(success=False, tool_calls=3, verification_passed=True)
    assert shaped_reward(used_tools) == 0.0


def test_long_runs_are_penalised_per_step_beyond_budget():
    assert shaped_reward(RunSignals(success=True, steps=20)) == 1.0
    assert shaped_reward(RunSignals(success=True, steps=35)) == pytest.approx(0.85)
    cfg = ShapingConfig(step_penalty=0.1, step_budget=5)
    assert shaped_reward(RunSignals(success=True, steps=8), cfg) == pytest.approx(0.7)
    assert shaped_reward(RunSignals(success=False, steps=500)) == 0.0  # clipped, never negative


@given(
    st.booleans(),
    st.integers(0, 50),
    st.booleans(),
    st.integers(0, 10_000),
    st.floats(0, 1),
    st.floats(0, 1),
)
def test_shaped_reward_is_always_in_unit_interval(success, tools, verified, steps, bonus, pen):
    cfg = ShapingConfig(tool_use_bonus=bonus, verification_bonus=bonus, step_penalty=pen)
    signals = RunSignals(success, tools, verified, steps)
    assert 0.0 <= shaped_reward(signals, cfg) <= 1.0


def test_registry_selects_by_agent_then_task_type_then_default():
    selection = RewardSelection(
        default="shaped", by_agent={"reviewer-bot": "quality"}, by_task_type={"bugfix": "binary"}
    )
    registry = default_registry(selection)
    graded = RunSignals(success=True, quality=0.6, steps=100)
    assert registry.for_context(agent="reviewer-bot", task_type="bugfix")(graded) == 0.6
    assert registry.for_context(agent="coder", task_type="bugfix")(graded) == 1.0
    assert registry.for_context(task_type="docs")(graded) == pytest.approx(0.2)  # 80 over


def test_custom_reward_is_registered_and_validated():
    registry = RewardRegistry()

    @registry.register("overeager")
    def overeager(signals: RunSignals) -> float:
        return 1.5 if signals.success else 0.0

    assert registry.get("overeager")(RunSignals(success=False)) == 0.0
    with pytest.raises(RewardRangeError, match=r"'overeager' returned 1.5, outside \[0, 1\]"):
        registry.get("overeager")(RunSignals(success=True))
    with pytest.raises(ValueError, match="already registered"):
        registry.register("overeager")(overeager)


def test_nan_reward_is_rejected():
    registry = RewardRegistry()
    registry.register("nan")(lambda s: float("nan"))
    with pytest.raises(RewardRangeError):
        registry.get("nan")(RunSignals(success=True))


def test_unknown_reward_names_the_registered_ones():
    with pytest.raises(UnknownRewardError, match="binary, outcome_shaped, quality, shaped"):
        default_registry().get("missing")


def test_group_advantages_normalise_within_group():
    adv = group_advantages([1.0, 0.0, 0.5, 0.5])
    assert sum(adv) == pytest.approx(0.0)
    assert adv[0] > adv[2] == adv[3] > adv[1]
    assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0)


def test_equal_rewards_and_single_runs_have_zero_advantage():
    assert group_advantages([0.7, 0.7, 0.7]) == [0.0, 0.0, 0.0]
    assert group_advantages([1.0]) == [0.0]
    assert group_advantages([]) == []
