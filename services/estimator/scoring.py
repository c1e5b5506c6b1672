"""The estimator's tunables, as users edit them in ``deploy/config/scoring.yaml``.

Every section has defaults equal to the shipped file, so a partial YAML file only needs
the values it changes.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RiskRule(_Strict):
    """A risk that raises a task's value, found in its labels or text."""

    bonus: float
    #: Labels or phrases (matched as whole words, case-insensitive) that signal the risk.
    keywords: tuple[str, ...]


class DeadlineBonus(_Strict):
    """Bonus that grows linearly as the deadline approaches; overdue earns all of it."""

    max_bonus: float = 15.0
    horizon_days: PositiveFloat = 14.0


class ValueConfig(_Strict):
    """How the 0-100 value score is composed."""

    priority_weights: dict[str, float] = Field(
        default_factory=lambda: {"P0": 40.0, "P1": 30.0, "P2": 20.0, "P3": 10.0, "P4": 5.0}
    )
    default_priority: str = "P2"
    complexity_multipliers: dict[str, float] = Field(
        default_factory=lambda: {"simple": 1.0, "medium": 1.15, "complex": 1.3}
    )
    domain_modifiers: dict[str, float] = Field(
        default_factory=lambda: {
            "security": 10.0,
            "backend": 5.0,
            "infra": 5.0,
            "data": 5.0,
            "frontend": 3.0,
            "docs": -5.0,
        }
    )
    risk_modifiers: dict[str, RiskRule] = Field(
        default_factory=lambda: {
            "security": RiskRule(
                bonus=15.0,
                keywords=("security", "vulnerability", "cve", "xss", "csrf", "injection"),
            ),
            "data_loss": RiskRule(
                bonus=15.0, keywords=("data loss", "data-loss", "corruption", "corrupted")
            ),
            "production": RiskRule(
                bonus=10.0, keywords=("production", "prod", "outage", "incident")
            ),
            "hotfix": RiskRule(bonus=10.0, keywords=("hotfix", "hot fix", "hot-fix")),
        }
    )
    deadline: DeadlineBonus = Field(default_factory=DeadlineBonus)


class ColdStartPriors(_Strict):
    """Points guessed from features alone, for a workspace without finished tasks."""

    base_points: PositiveFloat = 3.0
    type_points: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {
            "bug": 2.0,
            "feature": 5.0,
            "refactor": 5.0,
            "chore": 1.0,
            "docs": 1.0,
            "test": 2.0,
            "spike": 3.0,
        }
    )
    size_word_factors: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {
            "typo": 0.35,
            "rename": 0.5,
            "bump": 0.4,
            "docs": 0.7,
            "tweak": 0.6,
            "refactor": 1.6,
            "migrate": 2.0,
            "migration": 2.0,
            "redesign": 2.5,
            "rewrite": 2.5,
            "integrate": 1.5,
        }
    )
    #: Growth per file listed beyond the first, per acceptance criterion, per subtask
    #: beyond the first.
    per_file: float = 0.15
    per_acceptance: float = 0.1
    per_subtask: float = 0.2
    #: Lines of change worth one point, when the task states its size in lines.
    lines_per_point: PositiveFloat = 80.0


class PointsConfig(_Strict):
    """How neighbours and history combine into points.

    One set of weights for every workspace; each workspace only checks, on its newest
    tasks, whether they beat its history median.
    """

    #: Nearest completed tasks that vote.
    k: PositiveInt = 40
    #: Similarity exponent: higher trusts the closest neighbours more.
    power: PositiveFloat = 1.0
    #: Total weight of the whole history's distribution (the shrinkage target).
    prior_mass: PositiveFloat = 2.0
    #: Half-life, in tasks, of a past task's share of ``prior_mass``, counted back from the
    #: newest (history is in completion order): recent work resembles the next task more
    #: than old work does. 0 weighs all history alike.
    recency_half_life: float = Field(default=25.0, ge=0.0)
    #: Total weight of past tasks sharing the task's type or a label.
    group_mass: float = Field(default=2.0, ge=0.0)
    #: Scale of the nearest tasks' votes; 0 leaves the (recency-weighted) history median,
    #: which a workspace falls back to when its text does not predict its points.
    neighbour_weight: float = Field(default=1.0, ge=0.0)
    #: Neighbours less similar than this do not vote.
    min_similarity: float = Field(default=0.05, ge=0.0, le=1.0)
    #: Tasks a type or label needs in history before it counts as a group.
    min_group_samples: PositiveInt = 5
    cold_start: ColdStartPriors = Field(default_factory=ColdStartPriors)


class VelocityConfig(_Strict):
    """Prior velocity (points per hour) used until enough history is measured."""

    prior_median: PositiveFloat = 0.5
    prior_sigma: PositiveFloat = 0.8
    min_samples: PositiveInt = 5


class TokenConfig(_Strict):
    """Token use per task, before calibration from observed runs."""

    base_input: float = Field(default=8000.0, ge=0.0)
    input_per_point: float = Field(default=30000.0, ge=0.0)
    input_per_word: float = Field(default=40.0, ge=0.0)
    input_per_file: float = Field(default=4000.0, ge=0.0)
    output_per_point: float = Field(default=4000.0, ge=0.0)
    #: Share of input tokens expected to be served from the provider's prompt cache.
    cached_share: float = Field(default=0.5, ge=0.0, le=1.0)
    type_multipliers: dict[str, PositiveFloat] = Field(
        default_factory=lambda: {
            "bug": 1.0,
            "feature": 1.0,
            "refactor": 1.3,
            "docs": 0.5,
            "test": 0.8,
            "chore": 0.6,
        }
    )


class ScoringConfig(_Strict):
    """Everything the estimator reads from ``scoring.yaml``."""

    value: ValueConfig = Field(default_factory=ValueConfig)
    points: PointsConfig = Field(default_factory=PointsConfig)
    velocity: VelocityConfig = Field(default_factory=VelocityConfig)
    tokens: TokenConfig = Field(default_factory=TokenConfig)


def load_scoring_config(path: str | Path) -> ScoringConfig:
    """Read and validate a scoring YAML file; an empty file yields the defaults.

    Raises:
        OSError: The file cannot be read.
        pydantic.ValidationError: A value is missing its type or an unknown key is present.
    """
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return ScoringConfig.model_validate(raw)
