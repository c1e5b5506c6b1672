"""Running statistics and per-model performance scores.

Everything here is pure: a ``ModelScore`` goes in with a ``RunOutcome`` and a new
``ModelScore`` comes out, so the learner can persist the result wherever it likes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from tally.money import micros_to_usd, usd_to_micros


@dataclass(frozen=True)
class RunningStats:
    """Count, mean and variance of a stream of numbers, updated one value at a time.

    Uses Welford's update so the variance stays accurate over millions of values, and
    Chan's parallel formula to merge two summaries (e.g. two replicas' partial sums).

    Example:
        >>> RunningStats().add(2.0).add(4.0).mean
        3.0
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0  #: sum of squared deviations from the mean
    min: float | None = None  #: smallest value seen: for velocity, the worst run
    max: float | None = None  #: largest value seen: for velocity, the best run

    def add(self, value: float) -> RunningStats:
        """Return the statistics with ``value`` included."""
        x = float(value)
        if not math.isfinite(x):
            raise ValueError(f"running stats need finite values, got {value!r}")
        count = self.count + 1
        delta = x - self.mean
        mean = self.mean + delta / count
        m2 = self.m2 + delta * (x - mean)
        low = x if self.min is None else min(self.min, x)
        high = x if self.max is None else max(self.max, x)
        return RunningStats(count, mean, m2, low, high)

    def merge(self, other: RunningStats) -> RunningStats:
        """Return the statistics of both streams together (Chan et al.)."""
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta * delta * self.count * other.count / count
        lows = [v for v in (self.min, other.min) if v is not None]
        highs = [v for v in (self.max, other.max) if v is not None]
        return RunningStats(count, mean, m2, min(lows), max(highs))

    def replace(self, old: float, new: float) -> RunningStats:
        """Return the statistics with one earlier value ``old`` replaced by ``new``.

        The count stays; mean and variance are exact (the inverse of Welford's step).
        ``min`` and ``max`` take in ``new``; an extreme that was ``old`` itself cannot be
        recovered from the summary and stays.
        """
        x, y = float(old), float(new)
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"running stats need finite values, got {old!r} -> {new!r}")
        if self.count == 0:
            return self.add(y)
        delta = y - x
        mean = self.mean + delta / self.count
        m2 = max(0.0, self.m2 + delta * (y - mean + x - self.mean))
        low = y if self.min is None else min(self.min, y)
        high = y if self.max is None else max(self.max, y)
        return RunningStats(self.count, mean, m2, low, high)

    @property
    def variance(self) -> float:
        """Sample variance (n - 1 in the denominator); 0 with fewer than two values."""
        return self.m2 / (self.count - 1) if self.count > 1 else 0.0

    @property
    def stddev(self) -> float:
        """Sample standard deviation; 0 with fewer than two values."""
        return math.sqrt(self.variance)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form for persistence."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunningStats:
        """Rebuild statistics saved with :meth:`to_dict`."""
        low, high = data.get("min"), data.get("max")
        return cls(
            count=int(data.get("count", 0)),
            mean=float(data.get("mean", 0.0)),
            m2=float(data.get("m2", 0.0)),
            min=None if low is None else float(low),
            max=None if high is None else float(high),
        )


@dataclass(frozen=True)
class RunOutcome:
    """What one finished run tells the learner about a model."""

    model: str
    task_type: str
    band: str
    story_points: float
    actual_hours: float
    success: bool
    quality: float  #: reviewer or verifier grade, 0 (useless) to 1 (perfect)
    cost_usd: float
    tokens: int

    def __post_init__(self) -> None:
        if not 0.0 <= self.quality <= 1.0:
            raise ValueError(f"quality must be within [0, 1], got {self.quality}")
        if self.story_points < 0 or self.actual_hours < 0 or self.cost_usd < 0 or self.tokens < 0:
            raise ValueError("story points, hours, cost and tokens cannot be negative")


@dataclass(frozen=True)
class RunFigures:
    """What a re-total of a recorded run can change."""

    cost_micros: int
    tokens: int


@dataclass(frozen=True)
class ModelScore:
    """Measured performance of one model on one task type and complexity band.

    Velocity (story points per hour) is sampled from successful runs only: a failed run
    delivered no points. Cost and tokens count every run, so failures make each
    delivered point dearer, which is what the one paying for them sees.
    """

    model: str
    task_type: str
    band: str
    velocity: RunningStats = field(default_factory=RunningStats)
    quality: RunningStats = field(default_factory=RunningStats)
    cost: RunningStats = field(default_factory=RunningStats)
    runs: int = 0
    successes: int = 0
    delivered_points: float = 0.0
    #: every run's cost summed exactly, in integer micro-dollars (see `tally.money`)
    total_cost_micros: int = 0
    total_tokens: int = 0
    total_hours: float = 0.0

    @property
    def sample_size(self) -> int:
        """Number of runs observed."""
        return self.runs

    @property
    def success_rate(self) -> float:
        """Share of runs that succeeded; 0 before any run."""
        return self.successes / self.runs if self.runs else 0.0

    @property
    def quality_mean(self) -> float:
        return self.quality.mean

    @property
    def cost_mean(self) -> float:
        """Mean dollar cost of a run."""
        return self.cost.mean

    @property
    def total_cost_usd(self) -> float:
        """Every run's cost in dollars."""
        return float(micros_to_usd(self.total_cost_micros))

    @property
    def cost_per_point(self) -> float | None:
        """Dollars spent per delivered story point; None until a point is delivered."""
        return self.total_cost_usd / self.delivered_points if self.delivered_points else None

    @property
    def tokens_per_point(self) -> float | None:
        """Tokens spent per delivered story point; None until a point is delivered."""
        return self.total_tokens / self.delivered_points if self.delivered_points else None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form for persistence."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelScore:
        """Rebuild a score saved with :meth:`to_dict`."""
        return cls(
            model=data["model"],
            task_type=data["task_type"],
            band=data["band"],
            velocity=RunningStats.from_dict(data.get("velocity", {})),
            quality=RunningStats.from_dict(data.get("quality", {})),
            cost=RunningStats.from_dict(data.get("cost", {})),
            runs=int(data.get("runs", 0)),
            successes=int(data.get("successes", 0)),
            delivered_points=float(data.get("delivered_points", 0.0)),
            total_cost_micros=_total_micros(data),
            total_tokens=int(data.get("total_tokens", 0)),
            total_hours=float(data.get("total_hours", 0.0)),
        )


def _total_micros(data: Mapping[str, Any]) -> int:
    if "total_cost_micros" in data:
        return int(data["total_cost_micros"])
    # A score saved before money was counted in micro-dollars holds float dollars.
    return int(usd_to_micros(data.get("total_cost_usd", 0.0)))


def update(score: ModelScore, outcome: RunOutcome) -> ModelScore:
    """Return ``score`` with one more run folded in.

    Raises:
        ValueError: if the outcome belongs to another model, task type or band.
    """
    key = (score.model, score.task_type, score.band)
    other = (outcome.model, outcome.task_type, outcome.band)
    if key != other:
        raise ValueError(f"outcome for {other} cannot update the score of {key}")
    velocity = score.velocity
    points = 0.0
    if outcome.success:
        points = outcome.story_points
        if outcome.actual_hours > 0:
            velocity = velocity.add(outcome.story_points / outcome.actual_hours)
    return replace(
        score,
        velocity=velocity,
        quality=score.quality.add(outcome.quality),
        cost=score.cost.add(outcome.cost_usd),
        runs=score.runs + 1,
        successes=score.successes + int(outcome.success),
        delivered_points=score.delivered_points + points,
        total_cost_micros=score.total_cost_micros + int(usd_to_micros(outcome.cost_usd)),
        total_tokens=score.total_tokens + outcome.tokens,
        total_hours=score.total_hours + outcome.actual_hours,
    )


def revise(score: ModelScore, old: RunFigures, new: RunFigures) -> ModelScore:
    """Return ``score`` with one run's cost and tokens revised from ``old`` to ``new``
    (a run re-totalled after events reached the tracker late). Its success, quality and
    velocity were learned once and stay."""
    return replace(
        score,
        cost=score.cost.replace(micros_to_usd(old.cost_micros), micros_to_usd(new.cost_micros)),
        total_cost_micros=score.total_cost_micros + new.cost_micros - old.cost_micros,
        total_tokens=score.total_tokens + new.tokens - old.tokens,
    )


def complexity_affinity(
    scores: Iterable[ModelScore], model: str, task_type: str
) -> dict[str, float]:
    """Mean quality of ``model`` on ``task_type`` per complexity band it has run in."""
    return {
        s.band: s.quality.mean
        for s in scores
        if s.model == model and s.task_type == task_type and s.quality.count
    }


def _normalised(values: list[float]) -> list[float]:
    """Min-max scale to [0, 1]; equal values all score 1 so they neither help nor hurt."""
    low, high = min(values), max(values)
    if high - low <= 1e-12:
        return [1.0] * len(values)
    return [(v - low) / (high - low) for v in values]


def learned_rank(
    scores: Iterable[ModelScore], weights: tuple[float, float, float] = (0.4, 0.3, 0.3)
) -> dict[str, float]:
    """Score each candidate model in [0, 1] from quality, velocity and cost, best first.

    Each signal is min-max normalised across the candidates; cost per delivered point is
    inverted so the cheapest scores 1. A model that has not delivered a point yet scores
    0 on cost and on velocity.

    Args:
        scores: one score per candidate model (same task type and band).
        weights: weights of (quality, velocity, cost); rescaled to sum to 1.

    Raises:
        ValueError: on a duplicate model or weights that are negative or all zero.
    """
    candidates = list(scores)
    models = [s.model for s in candidates]
    if len(set(models)) != len(models):
        raise ValueError(f"learned_rank needs one score per model, got {models}")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be non-negative and not all zero, got {weights}")
    if not candidates:
        return {}
    wq, wv, wc = (w / sum(weights) for w in weights)
    quality = _normalised([s.quality.mean for s in candidates])
    velocity = _normalised([s.velocity.mean for s in candidates])
    known = [s.cost_per_point for s in candidates if s.cost_per_point is not None]
    cheap = _normalised([-c for c in known]) if known else []
    cost_score = iter(cheap)
    cost = [0.0 if s.cost_per_point is None else next(cost_score) for s in candidates]
    velocity = [v if s.velocity.count else 0.0 for v, s in zip(velocity, candidates, strict=True)]
    ranked = {
        s.model: wq * q + wv * v + wc * c
        for s, q, v, c in zip(candidates, quality, velocity, cost, strict=True)
    }
    return dict(sorted(ranked.items(), key=lambda item: item[1], reverse=True))
