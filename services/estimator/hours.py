"""Hours as a distribution, from measured time conditioned on points.

Every measured duration Tally has — imported ``actual_hours``, the tracker's runs (as the
learner logs them, per model and task type) and the time tasks spent in the work lane — is
a sample ``(points, hours, model, type)``. For a task of ``p`` points, P50 and P90 are
quantiles of past log-hours weighted by how close each sample's points are to ``p`` (a
Gaussian kernel on log points): where a points value has many samples they dominate, where
it has few its neighbours on the scale lend theirs, so thin data is pooled with similar
sizes rather than fitted by a formula (hours are not proportional to points in real data).
The most specific pool with enough samples is used: (model, type), model, type, then the
whole workspace. Without enough measured time, a lognormal velocity prior (points per hour,
``scoring.yaml``) stands in and says so (``source = "prior"``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from services.estimator.scoring import VelocityConfig

#: Key of a duration pool: (model, task type); None stands for "any".
PoolKey = tuple[str | None, str | None]
#: Point values below this count as this on the log scale (0-point tasks still take time).
MIN_POINTS = 0.25
#: The standard normal's 90% quantile (the prior's P90).
Z90 = float(stats.norm.ppf(0.9))


@dataclass(frozen=True)
class Duration:
    """A measured duration of a finished task."""

    points: float
    hours: float
    model: str | None = None
    task_type: str | None = None
    task_id: str | None = None


@dataclass(frozen=True)
class HoursEstimate:
    """Expected hours for a task.

    Attributes:
        p50: Hours the task takes or less, half the time.
        p90: Hours it takes or less, nine times out of ten.
        source: ``measured`` from the workspace's durations, or ``prior``.
        samples: Measured durations in the pool used (0 for the prior).
    """

    p50: float
    p90: float
    source: Literal["measured", "prior"]
    samples: int


def _weighted_quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    """Quantile ``q`` of weighted values (mid-point cumulative weights, interpolated)."""
    order = np.argsort(values)
    v, w = values[order], weights[order]
    cumulative = np.cumsum(w)
    positions = (cumulative - 0.5 * w) / cumulative[-1]
    return float(np.interp(q, positions, v))


class HoursModel:
    """P50/P90 hours for a task of given points, from measured durations.

    Example:
        >>> samples = [Duration(p, 2.0 * p) for p in (1, 2, 3) for _ in range(10)]
        >>> round(HoursModel(samples, VelocityConfig()).hours(2).p50, 1)
        4.0
    """

    def __init__(self, samples: Sequence[Duration], config: VelocityConfig) -> None:
        self.config = config
        pools: dict[PoolKey, list[tuple[float, float]]] = defaultdict(list)
        for s in samples:
            if not (math.isfinite(s.points) and math.isfinite(s.hours) and s.hours > 0):
                continue
            if s.points < 0:
                continue
            pair = (math.log(max(s.points, MIN_POINTS)), math.log(s.hours))
            for key in {
                (s.model, s.task_type),
                (s.model, None),
                (None, s.task_type),
                (None, None),
            }:
                pools[key].append(pair)
        self._pools = {key: np.array(pairs) for key, pairs in pools.items()}

    @property
    def samples(self) -> int:
        """Measured durations of the workspace (all models and types)."""
        pool = self._pools.get((None, None))
        return 0 if pool is None else len(pool)

    def _pool(self, model: str | None, task_type: str | None) -> np.ndarray | None:
        cfg = self.config
        for key in ((model, task_type), (model, None), (None, task_type)):
            pool = self._pools.get(key)
            if key != (None, None) and pool is not None and len(pool) >= cfg.min_pool:
                return pool
        pool = self._pools.get((None, None))
        return pool if pool is not None and len(pool) >= cfg.min_measured else None

    def hours(
        self, points: float, model: str | None = None, task_type: str | None = None
    ) -> HoursEstimate:
        """Distribution of hours for a task of ``points`` points."""
        pool = self._pool(model, task_type)
        if pool is None:
            prior = VelocityModel.from_config(self.config).hours(points)
            return HoursEstimate(prior.p50, prior.p90, "prior", 0)
        x = math.log(max(points, MIN_POINTS))
        out = []
        cfg = self.config
        for level, bandwidth in ((0.5, cfg.bandwidth_p50), (0.9, cfg.bandwidth_p90)):
            weights = np.exp(-0.5 * ((pool[:, 0] - x) / bandwidth) ** 2) + 1e-12
            out.append(math.exp(_weighted_quantile(pool[:, 1], weights, level)))
        return HoursEstimate(out[0], max(out), "measured", len(pool))


class VelocityModel:
    """Velocity in points per hour as a lognormal: the prior before time is measured.

    Example:
        >>> model = VelocityModel().fit([0.4, 0.5, 0.6, 0.5, 0.45])
        >>> est = model.hours(5)
        >>> est.source, est.p50 < est.p90
        ('measured', True)
    """

    def __init__(
        self, prior_median: float = 0.5, prior_sigma: float = 0.8, min_samples: int = 5
    ) -> None:
        self.prior_median = prior_median
        self.prior_sigma = prior_sigma
        self.min_samples = min_samples
        self.log_median = math.log(prior_median)
        #: Spread of a new task's log velocity around the median.
        self.predictive_sigma = prior_sigma
        #: Student-t quantile for P90 (the normal one for the prior).
        self._z90 = Z90
        self.samples = 0

    @classmethod
    def from_config(cls, config: VelocityConfig) -> VelocityModel:
        """A model with the prior and sample threshold of ``scoring.yaml``."""
        return cls(config.prior_median, config.prior_sigma, config.min_samples)

    def fit(self, samples: Sequence[float]) -> VelocityModel:
        """Fit velocity to points-per-hour samples; keeps the prior below the minimum.

        Non-positive and non-finite samples are ignored; with n samples the P90 widens for
        the uncertainty of the fit itself (Student-t predictive interval).
        """
        values = np.array([s for s in samples if math.isfinite(s) and s > 0], dtype=float)
        if len(values) < self.min_samples:
            return self
        shape, _, scale = stats.lognorm.fit(values, floc=0)
        n = len(values)
        unbiased = max(float(shape), 1e-3) * math.sqrt(n / (n - 1))
        self.log_median = math.log(scale)
        self.predictive_sigma = unbiased * math.sqrt(1.0 + 1.0 / n)
        self._z90 = float(stats.t.ppf(0.9, df=n - 1))
        self.samples = n
        return self

    def hours(self, points: float) -> HoursEstimate:
        """Distribution of hours for a task of ``points`` points."""
        log_hours = math.log(max(points, MIN_POINTS)) - self.log_median
        return HoursEstimate(
            p50=math.exp(log_hours),
            p90=math.exp(log_hours + self._z90 * self.predictive_sigma),
            source="measured" if self.samples else "prior",
            samples=self.samples,
        )
