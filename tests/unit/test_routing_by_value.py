"""The value of a solve (``routing.yaml``) and the decisions priced by it."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.assigner.selection import Candidate, expected_values
from services.assigner.value import DEFAULT_VALUE_USD, load_routing_values
from services.learner.policy import RoutingPolicy
from tally.errors import ConfigError
from tally.registry import ModelSpec
from tally.settings import CONFIG_DIR


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


def test_the_shipped_file_sets_the_default_value_of_a_solve() -> None:
    values = load_routing_values(CONFIG_DIR / "routing.yaml")
    assert values.for_workspace("anyone") == DEFAULT_VALUE_USD == 100.0


def test_a_workspace_sets_a_value_or_a_target_cost_per_solve(tmp_path: Path) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(
        "default: {value_usd: 20}\n"
        "workspaces:\n  pay: {value_usd: 60}\n  docs: {target_cost_per_solve: 0.5}\n"
    )
    values = load_routing_values(path)
    assert (values.for_workspace("pay"), values.for_workspace("docs")) == (60.0, 0.5)
    assert values.for_workspace("other") == 20.0
    assert load_routing_values(tmp_path / "absent.yaml").for_workspace("x") == DEFAULT_VALUE_USD


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("workspaces:\n  pay: {value_usd: -1}\n", "workspaces.pay.value_usd"),
        ("default: {value_usd: 5, target_cost_per_solve: 5}\n", "default"),
        ("default: {worth: 5}\n", "default.worth"),
    ],
)
def test_a_bad_file_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_routing_values(path)


def test_after_a_failure_the_model_that_rescues_tasks_wins_not_the_first_attempt_favourite():
    policy = RoutingPolicy(["fast", "rescuer"])
    for _ in range(40):
        policy.observe("bug", "simple", "fast", 1.0, 0.1)  # solves 3 in 4 at first
        policy.observe("bug", "simple", "fast", 1.0, 0.1)
        policy.observe("bug", "simple", "fast", 1.0, 0.1)
        policy.observe("bug", "simple", "fast", 0.0, 0.1)
        policy.observe("bug", "simple", "rescuer", 0.0, 1.0)  # first attempts: 1 in 2
        policy.observe("bug", "simple", "rescuer", 1.0, 1.0)
        policy.observe("bug", "simple", "fast", 0.0, 0.1, attempt=2)  # after a failure
        policy.observe("bug", "simple", "rescuer", 1.0, 1.0, attempt=2)
    rows = policy.rows("bug", "simple")
    cands = [Candidate(spec(m), 0.9, 0.0, 0) for m in ("fast", "rescuer")]
    first = expected_values(cands, rows, value_usd=10.0, after_failure=False, seed=1)
    after = expected_values(cands, rows, value_usd=10.0, after_failure=True, seed=1)
    assert max(first, key=first.__getitem__) == "fast"
    assert max(after, key=after.__getitem__) == "rescuer"
    # Measured cost per attempt, not the list price: $1 against $0.1.
    assert rows["rescuer"][4] == pytest.approx(1.0) and rows["fast"][4] == pytest.approx(0.1)


def test_a_thin_class_borrows_the_models_overall_evidence_after_a_failure():
    policy = RoutingPolicy(["a", "b"])
    for _ in range(30):
        policy.observe("other", "simple", "a", 1.0, 1.0, attempt=2)
        policy.observe("other", "simple", "b", 0.0, 1.0, attempt=2)
    rows = policy.rows("new", "simple")  # no runs of this class at all
    mean = {m: r[2] / (r[2] + r[3]) for m, r in rows.items()}  # type: ignore[operator]
    assert mean["a"] > 0.7 > 0.3 > mean["b"]


def test_exploration_shrinks_as_evidence_grows():
    policy = RoutingPolicy(["a", "b", "c", "d"], floor=0.2)
    before = policy.exploration("bug", "simple")
    for _ in range(100):
        policy.observe("bug", "simple", "a", 1.0, 0.1)
    assert before == 0.2
    assert policy.exploration("bug", "simple") < 0.05


def test_a_policy_saved_before_later_attempts_were_kept_apart_still_loads():
    policy = RoutingPolicy(["a", "b"])
    policy.observe("bug", "simple", "a", 1.0, 0.5)
    policy.observe("bug", "simple", "a", 0.0, 0.5, attempt=2)
    saved = policy.to_dict()
    old = {k: v for k, v in saved.items() if k not in {"retry", "retry_overall"}}
    restored = RoutingPolicy.from_dict(old)
    assert restored.rows("bug", "simple")["a"][:2] == policy.rows("bug", "simple")["a"][:2]
    assert RoutingPolicy.from_dict(saved).rows("bug", "simple") == policy.rows("bug", "simple")
