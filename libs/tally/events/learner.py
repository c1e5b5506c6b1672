"""What the learner publishes: scores, calibrations and the routing policy."""

from __future__ import annotations

import math
import statistics

from pydantic import Field

from tally import subjects
from tally.events.envelope import Event, Model

#: Stands for "any model" or "any task type" in a calibration key.
ANY = "*"

VelocityPools = dict[tuple[str | None, str | None], list[float]]


class ModelScoreRow(Model):
    """Learned performance of one model on one task type and complexity band."""

    model: str
    task_type: str
    band: str
    samples: int = Field(ge=0)
    velocity_mean: float | None = None
    velocity_std: float | None = None
    velocity_best: float | None = None
    velocity_worst: float | None = None
    quality_mean: float | None = None
    success_rate: float | None = None
    cost_mean: float | None = None
    cost_per_point: float | None = None
    tokens_per_point: float | None = None
    hours: float | None = None


class ScoresUpdated(Event):
    subject = subjects.LEARNER_SCORES_UPDATED

    scores: tuple[ModelScoreRow, ...]


class ErrorTrendRow(Model):
    """Estimation error of hours lately (mean absolute relative error) and its direction."""

    recent_mae: float | None = None
    previous_mae: float | None = None
    slope: float | None = None
    samples: int = Field(0, ge=0)
    improving: bool | None = None


class CalibrationUpdated(Event):
    """Velocity fits, token factors and the error trend of one workspace, for the estimator."""

    subject = subjects.LEARNER_CALIBRATION_UPDATED

    #: ``"<model>|<task_type>"`` (either may be ``*``) → lognormal (mu, sigma, samples),
    #: sigma being the maximum-likelihood spread of log velocity.
    velocity: dict[str, tuple[float, float, int]] = Field(default_factory=dict)
    #: task type → actual/estimated token ratio.
    token_factors: dict[str, float] = Field(default_factory=dict)
    error_trend: ErrorTrendRow | None = None

    def velocity_pools(self) -> VelocityPools:
        """Per pool ``(model, task_type)`` (None = any), a sample equivalent to its fit.

        A lognormal's maximum-likelihood fit depends only on the count, mean and spread of
        the log values, so ``samples`` values at evenly spaced normal quantiles, rescaled to
        mean ``mu`` and spread ``sigma``, refit to exactly the published fit. Consumers that
        fit raw samples can therefore take the learner's fits unchanged.
        """
        pools: VelocityPools = {}
        for key, (mu, sigma, n) in self.velocity.items():
            model, _, task_type = key.partition("|")
            if n < 2 or not math.isfinite(mu) or not math.isfinite(sigma):
                continue
            unit = statistics.NormalDist()
            z = [unit.inv_cdf((i + 0.5) / n) for i in range(n)]
            spread = statistics.pstdev(z) or 1.0
            pools[(None if model == ANY else model, None if task_type == ANY else task_type)] = [
                math.exp(mu + sigma * q / spread) for q in z
            ]
        return pools


class PolicyUpdated(Event):
    """The routing policy's probabilities per ``"<task_type>|<band>"``."""

    subject = subjects.LEARNER_POLICY_UPDATED

    version: int = Field(ge=0)
    probabilities: dict[str, dict[str, float]] = Field(default_factory=dict)
    #: Models a new (task type, band) starts with, all equally likely.
    models: tuple[str, ...] = ()
    #: Per ``"<task_type>|<band>"`` (``"*|*"``: a class not seen yet), per model:
    #: ``[alpha, beta, alpha_after_failure, beta_after_failure, mean_cost_usd]`` -- Beta
    #: posteriors of success at a first attempt and after another model failed, and the
    #: measured cost per attempt (null: no runs yet). Empty from older learners.
    posteriors: dict[str, dict[str, list[float | None]]] = Field(default_factory=dict)
