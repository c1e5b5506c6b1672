"""Calibration of the estimator from measured runs: velocity fits, token ratios, error trend.

Pure functions over rows the repository reads. What they return is what the learner
publishes on ``learner.calibration.updated``: the estimator uses the velocity fits in
place of its own and multiplies its token estimates by the per-type ratios.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

#: Stands for "any model" or "any task type" in a velocity key.
ANY = "*"
#: Token ratios outside this range are measurement errors (a run with no usage reported).
RATIO_RANGE = (0.1, 10.0)


@dataclass(frozen=True)
class VelocityFit:
    """A lognormal fit of velocity (points per hour): ``log v ~ Normal(mu, sigma)``.

    ``sigma`` is the maximum-likelihood (population) spread of the log velocities, as
    ``scipy.stats.lognorm.fit`` returns it; the estimator widens it for small samples.
    """

    mu: float
    sigma: float
    samples: int

    @property
    def median(self) -> float:
        """Median velocity, ``exp(mu)``."""
        return math.exp(self.mu)


@dataclass(frozen=True)
class VelocityRow:
    """One measured velocity: which model, which task type, how many points per hour."""

    model: str
    task_type: str
    velocity: float


def fit_velocity(samples: Sequence[float]) -> VelocityFit | None:
    """Fit a lognormal (location fixed at 0) to positive, finite velocities.

    Returns:
        The fit, or None with fewer than two usable samples.
    """
    values = np.array([v for v in samples if math.isfinite(v) and v > 0], dtype=float)
    if values.size < 2:
        return None
    shape, _, scale = stats.lognorm.fit(values, floc=0)
    return VelocityFit(mu=float(math.log(scale)), sigma=float(shape), samples=int(values.size))


def velocity_key(model: str | None, task_type: str | None) -> str:
    """The published key of a velocity pool, e.g. ``"gpt-5|bug"`` or ``"*|bug"``."""
    return f"{model or ANY}|{task_type or ANY}"


def velocity_fits(rows: Iterable[VelocityRow], min_samples: int = 5) -> dict[str, VelocityFit]:
    """Lognormal velocity fits for every pool with at least ``min_samples`` runs.

    Pools are (model, type), (model, any type), (any model, type) and the whole
    workspace, so the estimator can fall back from the most specific one that exists.
    """
    pools: dict[str, list[float]] = defaultdict(list)
    for r in rows:
        if not (math.isfinite(r.velocity) and r.velocity > 0):
            continue
        for key in (
            velocity_key(r.model, r.task_type),
            velocity_key(r.model, None),
            velocity_key(None, r.task_type),
            velocity_key(None, None),
        ):
            pools[key].append(r.velocity)
    fits = {}
    for key, values in sorted(pools.items()):
        if len(values) >= max(min_samples, 2):
            fit = fit_velocity(values)
            if fit is not None:
                fits[key] = fit
    return fits


def token_factors(rows: Iterable[tuple[str, int, int]], min_samples: int = 3) -> dict[str, float]:
    """Actual / estimated token ratio per task type: the geometric mean of per-run ratios.

    The geometric mean makes a 2x overrun and a 2x underrun cancel. Runs with no estimate
    or no usage are skipped, ratios are clipped to :data:`RATIO_RANGE`, and types with
    fewer than ``min_samples`` usable runs get no factor (the estimator keeps 1.0).

    Args:
        rows: ``(task_type, actual_tokens, estimated_tokens)`` per run.
    """
    ratios: dict[str, list[float]] = defaultdict(list)
    low, high = RATIO_RANGE
    for task_type, actual, estimated in rows:
        if actual > 0 and estimated > 0:
            ratios[task_type].append(min(max(actual / estimated, low), high))
    return {
        task_type: round(statistics.geometric_mean(values), 4)
        for task_type, values in sorted(ratios.items())
        if len(values) >= min_samples
    }


@dataclass(frozen=True)
class ErrorTrend:
    """How far estimates missed lately, and whether that is getting better.

    Errors are absolute relative errors of hours, ``|actual - estimated| / estimated``.
    """

    recent_mae: float | None  #: mean absolute error of the last ``window`` tasks
    previous_mae: float | None  #: the same over the ``window`` tasks before those
    slope: float | None  #: least-squares change of the error per task, over all of them
    samples: int
    improving: bool | None = None  #: None until both windows have data
    errors: tuple[float, ...] = field(default=(), repr=False)


def error_trend(errors: Sequence[float], window: int = 20) -> ErrorTrend:
    """The estimation-error trend of tasks in the order they finished.

    ``improving`` compares the last ``window`` errors with the ``window`` before them:
    True when the recent mean absolute error is lower.
    """
    values = [abs(e) for e in errors if math.isfinite(e)]
    recent = values[-window:]
    previous = values[-2 * window : -window] if len(values) > window else []
    recent_mae = statistics.fmean(recent) if recent else None
    previous_mae = statistics.fmean(previous) if previous else None
    slope = None
    if len(values) >= 3:
        slope = float(np.polyfit(np.arange(len(values), dtype=float), values, 1)[0])
    improving = None
    if recent_mae is not None and previous_mae is not None:
        improving = recent_mae < previous_mae
    return ErrorTrend(recent_mae, previous_mae, slope, len(values), improving, tuple(recent))
