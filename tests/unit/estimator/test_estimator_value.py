"""Value score: priorities, complexity, domain and risk modifiers, deadlines, clamping."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.estimator.scoring import ScoringConfig, ValueConfig, load_scoring_config
from services.estimator.value import value_score

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
SHIPPED = Path(__file__).resolve().parents[3] / "deploy" / "config" / "scoring.yaml"


def _config() -> ValueConfig:
    return load_scoring_config(SHIPPED).value


def test_shipped_yaml_matches_the_built_in_defaults() -> None:
    assert load_scoring_config(SHIPPED) == ScoringConfig()


def test_p0_security_hotfix_on_the_backend_scores_high() -> None:
    result = value_score(
        "P0",
        "simple",
        ["backend", "security"],
        "Hotfix: token leak in login",
        None,
        NOW,
        _config(),
    )
    assert result.score >= 75
    assert result.breakdown["risk"] > 0 and result.breakdown["domain"] > 0


def test_p4_docs_typo_scores_low() -> None:
    result = value_score("P4", "simple", ["docs"], "Fix typo in README", None, NOW, _config())
    assert result.score <= 20


def test_higher_priority_and_complexity_score_higher() -> None:
    config = _config()
    p1 = value_score("P1", "medium", [], "Add export", None, NOW, config).score
    p3 = value_score("P3", "medium", [], "Add export", None, NOW, config).score
    complex_p1 = value_score(1, "complex", [], "Add export", None, NOW, config).score
    assert p1 > p3
    assert complex_p1 > p1


def test_risks_are_found_in_text_as_whole_words() -> None:
    config = _config()
    risky = value_score("P2", "simple", [], "Possible data loss on restore", None, NOW, config)
    benign = value_score("P2", "simple", [], "Product page copy", None, NOW, config)
    assert risky.breakdown["risk"] > 0
    assert benign.breakdown["risk"] == 0  # "Product" is not "prod"


def test_closer_deadlines_earn_more_bonus() -> None:
    config = _config()
    scores = [
        value_score("P2", "simple", [], "x", NOW + timedelta(days=d), NOW, config).score
        for d in (30, 10, 2, -1)
    ]
    assert scores[0] == value_score("P2", "simple", [], "x", None, NOW, config).score
    assert scores == sorted(scores)
    assert scores[-1] - scores[0] == config.deadline.max_bonus


def test_score_is_clamped_to_0_100() -> None:
    config = _config()
    everything = value_score(
        "P0",
        "complex",
        ["security", "backend", "infra", "data"],
        "production outage, data loss, security hotfix",
        NOW,
        NOW,
        config,
    )
    assert everything.score == 100
    docs = ValueConfig(domain_modifiers={"docs": -50.0})
    assert value_score("P4", "simple", ["docs"], "typo", None, NOW, docs).score == 0
