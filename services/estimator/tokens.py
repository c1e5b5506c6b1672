"""Token estimates per task, corrected by what runs of the same task type really used.

Input grows with the work (points), the text to read (words) and the files to open;
output grows with the work. The learner feeds back the ratio actual / estimated per task
type, and the estimate is multiplied by it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from services.estimator.decompose import TaskFeatures
from services.estimator.scoring import TokenConfig

#: Calibration factors outside this range are treated as broken measurements and clipped.
_FACTOR_RANGE = (0.1, 10.0)


@dataclass(frozen=True)
class TokenEstimate:
    """Expected tokens for a task; ``cached_input`` is the part of ``input`` served from cache."""

    input: int
    output: int
    cached_input: int


@dataclass(frozen=True)
class TokenCalibration:
    """Observed actual / estimated token ratios by task type; 1.0 where nothing is known."""

    factors: Mapping[str, float] = field(default_factory=dict)
    default: float = 1.0

    def factor(self, task_type: str | None) -> float:
        """The correction for a task type, or ``default`` when the type was never observed."""
        return self.factors.get(task_type or "", self.default)

    @classmethod
    def from_ratios(
        cls, ratios: Mapping[str, Sequence[float]], min_samples: int = 3
    ) -> TokenCalibration:
        """Build factors from per-type ratios (geometric mean, so 2x and 0.5x cancel).

        Types with fewer than ``min_samples`` positive ratios keep the default of 1.0.
        """
        factors = {}
        for task_type, values in ratios.items():
            positive = [v for v in values if v > 0 and math.isfinite(v)]
            if len(positive) >= min_samples:
                low, high = _FACTOR_RANGE
                factors[task_type] = min(max(statistics.geometric_mean(positive), low), high)
        return cls(factors=factors)


def estimate_tokens(
    points: float,
    task_type: str | None,
    features: TaskFeatures,
    calibration: TokenCalibration | None = None,
    config: TokenConfig | None = None,
) -> TokenEstimate:
    """Estimate input, output and cached-input tokens for a task.

    Args:
        points: The task's story points.
        task_type: Its type (``bug``, ``feature``, ``docs``...), which scales the estimate.
        features: Size signals from the task text (word count, files listed).
        calibration: Observed correction factors by task type.
        config: Per-point and per-word rates; defaults to the shipped ones.
    """
    config = config or TokenConfig()
    calibration = calibration or TokenCalibration()
    scale = config.type_multipliers.get(task_type or "", 1.0) * calibration.factor(task_type)
    points = max(points, 0.0)
    input_tokens = scale * (
        config.base_input
        + config.input_per_point * points
        + config.input_per_word * features.word_count
        + config.input_per_file * features.files_count
    )
    output_tokens = scale * config.output_per_point * points
    return TokenEstimate(
        input=round(input_tokens),
        output=round(output_tokens),
        cached_input=round(input_tokens * config.cached_share),
    )
