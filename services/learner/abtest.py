"""A/B analysis of two arms with Welch's t-test, and the held-out evaluation split."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy.stats import t as t_dist


class Verdict(StrEnum):
    INSUFFICIENT_DATA = "insufficient data"
    A_BETTER = "A better"
    B_BETTER = "B better"
    NO_DIFFERENCE = "no significant difference"


@dataclass(frozen=True)
class WelchResult:
    """Welch's t statistic, its Welch-Satterthwaite degrees of freedom, two-sided p."""

    t: float
    df: float
    p_value: float


def _sample(values: Iterable[float], arm: str) -> np.ndarray:
    data = np.asarray(list(values), dtype=float)
    if data.size < 2:
        raise ValueError(f"arm {arm} needs at least two values, got {data.size}")
    return data


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchResult:
    """Two-sided Welch's t-test for a difference in means without assuming equal variance.

    When both arms are constant the test degenerates: equal means give ``t = 0, p = 1``
    and different means ``t = ±inf, p = 0``.
    """
    xa, xb = _sample(a, "A"), _sample(b, "B")
    se_a, se_b = xa.var(ddof=1) / xa.size, xb.var(ddof=1) / xb.size
    diff = float(xa.mean() - xb.mean())
    se2 = se_a + se_b
    if se2 == 0.0:
        if diff == 0.0:
            return WelchResult(0.0, float(xa.size + xb.size - 2), 1.0)
        return WelchResult(math.copysign(math.inf, diff), float(xa.size + xb.size - 2), 0.0)
    t = diff / math.sqrt(se2)
    df = se2**2 / (se_a**2 / (xa.size - 1) + se_b**2 / (xb.size - 1))
    return WelchResult(float(t), float(df), float(2.0 * t_dist.sf(abs(t), df)))


def cohens_d(a: Sequence[float], b: Sequence[float]) -> float:
    """Mean difference (A - B) in units of the pooled standard deviation; 0 if both constant."""
    xa, xb = _sample(a, "A"), _sample(b, "B")
    pooled = ((xa.size - 1) * xa.var(ddof=1) + (xb.size - 1) * xb.var(ddof=1)) / (
        xa.size + xb.size - 2
    )
    diff = float(xa.mean() - xb.mean())
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / math.sqrt(pooled)


def hedges_g(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d with the small-sample bias correction ``1 - 3 / (4 (n_a + n_b) - 9)``."""
    n = len(a) + len(b)
    return cohens_d(a, b) * (1.0 - 3.0 / (4.0 * n - 9.0))


@dataclass(frozen=True)
class ArmComparison:
    """Everything a reader needs to judge an A/B result on one metric."""

    metric: str
    n_a: int
    n_b: int
    mean_a: float | None
    mean_b: float | None
    t: float | None
    df: float | None
    p_value: float | None
    cohens_d: float | None
    hedges_g: float | None
    verdict: Verdict


def compare_arms(
    metric_name: str,
    a_values: Sequence[float],
    b_values: Sequence[float],
    min_samples: int = 30,
    alpha: float = 0.05,
    higher_is_better: bool = True,
) -> ArmComparison:
    """Compare arm A with arm B on one metric.

    The verdict is ``insufficient data`` until each arm has ``min_samples`` values (and
    at least two); after that it names the better arm when Welch's p-value is below
    ``alpha``, else ``no significant difference``. Statistics are still reported for
    small arms when they can be computed, so a dashboard can show the trend.

    Args:
        higher_is_better: False for metrics such as cost or hours, where less wins.
    """
    a, b = list(a_values), list(b_values)
    result = welch_t_test(a, b) if len(a) >= 2 and len(b) >= 2 else None
    if result is None or len(a) < min_samples or len(b) < min_samples:
        verdict = Verdict.INSUFFICIENT_DATA
    elif result.p_value >= alpha:
        verdict = Verdict.NO_DIFFERENCE
    elif (result.t > 0) == higher_is_better:
        verdict = Verdict.A_BETTER
    else:
        verdict = Verdict.B_BETTER
    return ArmComparison(
        metric=metric_name,
        n_a=len(a),
        n_b=len(b),
        mean_a=float(np.mean(a)) if a else None,
        mean_b=float(np.mean(b)) if b else None,
        t=result.t if result else None,
        df=result.df if result else None,
        p_value=result.p_value if result else None,
        cohens_d=cohens_d(a, b) if result else None,
        hedges_g=hedges_g(a, b) if result else None,
        verdict=verdict,
    )


def arm_name(label: str | None, experiment: str) -> str | None:
    """The variant an assignment's arm label puts it in, if the label is ``experiment``'s.

    The assigner records arms as ``<experiment>:<variant>``; a label of another
    experiment (or none) gives None.

    Example:
        >>> arm_name("cheap-vs-best:B", "cheap-vs-best")
        'B'
    """
    prefix = f"{experiment}:"
    if not label or not label.startswith(prefix) or len(label) == len(prefix):
        return None
    return label[len(prefix) :]


def is_held_out(task_id: str, share: float = 0.2) -> bool:
    """Whether ``task_id`` belongs to the held-out evaluation set.

    The split hashes the id (SHA-256), so every process and every restart agrees on it
    and about ``share`` of tasks land in it.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be within [0, 1], got {share}")
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def held_out_split(task_ids: Iterable[str], share: float = 0.2) -> tuple[list[str], list[str]]:
    """Split ids into (training, held_out) with :func:`is_held_out`, order preserved."""
    train: list[str] = []
    held: list[str] = []
    for task_id in task_ids:
        (held if is_held_out(task_id, share) else train).append(task_id)
    return train, held
