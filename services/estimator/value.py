"""Value score 0-100: how much finishing a task is worth, from ``scoring.yaml``.

score = priority weight x complexity multiplier + domain modifiers + risk modifiers
+ deadline bonus, clamped to [0, 100]. The breakdown names each term so users can see why
one task outranks another.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from services.estimator.scoring import ValueConfig

_SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True)
class ValueScore:
    """A task's value and the terms that make it up (priority, complexity, domain, ...)."""

    score: float
    breakdown: dict[str, float]


def _priority_key(priority: str | int | None, config: ValueConfig) -> str:
    """Normalise ``0``, ``"p0"`` or ``"P0"`` to the config's key; unknown means default."""
    if priority is None:
        return config.default_priority
    key = f"P{priority}" if isinstance(priority, int) else priority.strip().upper()
    return key if key in config.priority_weights else config.default_priority


@functools.lru_cache(maxsize=256)
def _any_of(keywords: tuple[str, ...]) -> re.Pattern[str] | None:
    """One pattern for a rule's keywords as whole words (compiled once per rule)."""
    if not keywords:
        return None
    alternatives = "|".join(re.escape(k.lower()) for k in keywords)
    return re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])")


def _mentions(keywords: Iterable[str], haystacks: Iterable[str]) -> bool:
    """Whether any keyword appears as a whole word in any haystack (one pass per text)."""
    pattern = _any_of(tuple(keywords))
    return pattern is not None and any(pattern.search(h) for h in haystacks)


def deadline_bonus(deadline: datetime | None, now: datetime, config: ValueConfig) -> float:
    """Bonus rising linearly from 0 (``horizon_days`` away) to ``max_bonus`` (due or overdue)."""
    if deadline is None:
        return 0.0
    days_left = (deadline - now).total_seconds() / _SECONDS_PER_DAY
    urgency = 1.0 - days_left / config.deadline.horizon_days
    return config.deadline.max_bonus * min(max(urgency, 0.0), 1.0)


def value_score(
    priority: str | int | None,
    points_band: str,
    labels: Iterable[str],
    text: str,
    deadline: datetime | None,
    now: datetime,
    config: ValueConfig | None = None,
) -> ValueScore:
    """Score a task's value from 0 to 100.

    Args:
        priority: ``P0`` (most urgent) to ``P4``, or its number; unknown takes the default.
        points_band: ``simple``, ``medium`` or ``complex`` (see ``points.band``).
        labels: Task labels; domain modifiers match them, risk keywords match them too.
        text: Title and description, searched for risk keywords.
        deadline: When the task is due, or None.
        now: The current time (same timezone awareness as ``deadline``).
        config: Weights; defaults to the shipped ones.

    Example:
        >>> from datetime import datetime
        >>> value_score("P4", "simple", ["docs"], "Fix typo", None, datetime(2025, 1, 1)).score
        0.0
    """
    config = config or ValueConfig()
    label_set = {label.strip().lower() for label in labels if label.strip()}
    priority_weight = config.priority_weights[_priority_key(priority, config)]
    multiplier = config.complexity_multipliers.get(points_band, 1.0)
    haystacks = [text.lower(), *label_set]
    breakdown = {
        "priority": priority_weight,
        "complexity": priority_weight * (multiplier - 1.0),
        "domain": sum(config.domain_modifiers.get(label, 0.0) for label in label_set),
        "risk": sum(
            rule.bonus
            for rule in config.risk_modifiers.values()
            if _mentions(rule.keywords, haystacks)
        ),
        "deadline": deadline_bonus(deadline, now, config),
    }
    score = min(max(sum(breakdown.values()), 0.0), 100.0)
    return ValueScore(score=round(score, 2), breakdown=breakdown)
