"""Hours as a distribution: points divided by a velocity measured in points per hour.

Velocity is lognormal: fitted on the workspace's own finished tasks once there are enough
of them, a prior from ``scoring.yaml`` before that. Hours inherit the shape; because hours
are points / velocity, the slow tail of velocity (its P10) is the long tail of hours (P90).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

from services.estimator.scoring import VelocityConfig

#: Key of a velocity pool: (model, task type); None stands for "any".
VelocityKey = tuple[str | None, str | None]


@dataclass(frozen=True)
class HoursEstimate:
    """Expected hours for a task.

    Attributes:
        p50: Hours the task takes or less, half the time.
        p90: Hours it takes or less, nine times out of ten.
        mean: Expected hours (above the median: the distribution has a long tail).
        source: ``measured`` from the workspace's velocity, or ``prior``.
        samples: Finished tasks behind the velocity (0 for the prior).
    """

    p50: float
    p90: float
    mean: float
    source: Literal["measured", "prior"]
    samples: int


class VelocityModel:
    """Velocity in points per hour, as a lognormal distribution.

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
        self._z90 = float(stats.norm.ppf(0.9))
        self.samples = 0

    @classmethod
    def from_config(cls, config: VelocityConfig) -> VelocityModel:
        """A model with the prior and sample threshold of ``scoring.yaml``."""
        return cls(config.prior_median, config.prior_sigma, config.min_samples)

    @property
    def source(self) -> Literal["measured", "prior"]:
        """Whether the velocity comes from measurements or the prior."""
        return "measured" if self.samples else "prior"

    def fit(self, samples: Sequence[float]) -> VelocityModel:
        """Fit velocity to measured points-per-hour samples; keeps the prior below the minimum.

        Non-positive and non-finite samples are ignored. With n samples the P90 widens for
        the uncertainty of the fit itself (Student-t predictive interval), so a velocity
        measured on a handful of tasks does not promise more than it knows.

        Returns:
            The model itself, fitted.
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
        log_hours = math.log(max(points, 1e-9)) - self.log_median
        sigma = self.predictive_sigma
        return HoursEstimate(
            p50=math.exp(log_hours),
            p90=math.exp(log_hours + self._z90 * sigma),
            mean=math.exp(log_hours + sigma * sigma / 2.0),
            source=self.source,
            samples=self.samples,
        )


def velocity_model(
    samples: Mapping[VelocityKey, Sequence[float]],
    model: str | None,
    task_type: str | None,
    config: VelocityConfig,
) -> VelocityModel:
    """The most specific velocity with enough history, else the prior.

    Tries (model, task type), then the model on any type, then the type on any model, then
    the whole workspace ``(None, None)``.
    """
    for key in ((model, task_type), (model, None), (None, task_type), (None, None)):
        pool = samples.get(key, ())
        if len(pool) >= config.min_samples:
            return VelocityModel.from_config(config).fit(pool)
    return VelocityModel.from_config(config)
