"""What the learner reports: velocity trend, model comparison, accuracy, A/B, changes.

Pure functions from rows to JSON-ready dictionaries; the CLI prints them.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from enum import Enum
from typing import Any

from services.learner.abtest import compare_arms
from services.learner.calibration import error_trend
from services.learner.stats import ModelScore, RunningStats


def velocity_trend(logs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per day (UTC): runs, mean velocity (points/hour) and mean absolute error of hours."""
    days: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in logs:
        at: datetime = row["at"]
        days[at.date().isoformat()].append(row)
    out = []
    for day, rows in sorted(days.items()):
        velocities = [r["velocity"] for r in rows if r.get("velocity") is not None]
        errors = [abs(r["error_pct"]) for r in rows if r.get("error_pct") is not None]
        out.append(
            {
                "day": day,
                "runs": len(rows),
                "velocity_mean": round(statistics.fmean(velocities), 4) if velocities else None,
                "error_pct_mean": round(statistics.fmean(errors), 2) if errors else None,
            }
        )
    return out


def model_comparison(scores: Iterable[ModelScore]) -> list[dict[str, Any]]:
    """One row per model over all task types and bands, best quality first.

    ``best_band`` is the band with the highest mean quality (the model's complexity
    affinity), ties going to the band with more runs.
    """
    per_model: dict[str, list[ModelScore]] = defaultdict(list)
    for s in scores:
        per_model[s.model].append(s)
    rows = []
    for model, items in per_model.items():
        velocity, quality = RunningStats(), RunningStats()
        bands: dict[str, RunningStats] = defaultdict(RunningStats)
        for s in items:
            velocity = velocity.merge(s.velocity)
            quality = quality.merge(s.quality)
            bands[s.band] = bands[s.band].merge(s.quality)
        runs = sum(s.runs for s in items)
        points = sum(s.delivered_points for s in items)
        cost = sum(s.total_cost_usd for s in items)
        best = max(bands, key=lambda b: (bands[b].mean, bands[b].count)) if bands else None
        rows.append(
            {
                "model": model,
                "samples": runs,
                "velocity_mean": round(velocity.mean, 4) if velocity.count else None,
                "velocity_best": velocity.max,
                "velocity_worst": velocity.min,
                "quality_mean": round(quality.mean, 4) if quality.count else None,
                "success_rate": round(sum(s.successes for s in items) / runs, 4) if runs else None,
                "cost_per_point": round(cost / points, 6) if points else None,
                "best_band": best,
                "hours": round(sum(s.total_hours for s in items), 3),
            }
        )
    return sorted(rows, key=lambda r: (-(r["quality_mean"] or 0.0), r["model"]))


def accuracy(logs: Sequence[Mapping[str, Any]], window: int = 20) -> dict[str, Any]:
    """Estimation accuracy of the last ``window`` tasks and whether it is improving."""
    errors = [r["error_pct"] / 100.0 for r in logs if r.get("error_pct") is not None]
    trend = error_trend(errors, window)
    return {
        "tasks": len(trend.errors),
        "mean_error_pct": None if trend.recent_mae is None else round(trend.recent_mae * 100, 2),
        "previous_error_pct": None
        if trend.previous_mae is None
        else round(trend.previous_mae * 100, 2),
        "improving": trend.improving,
    }


#: Metrics compared between arms, and whether more is better.
AB_METRICS = (("reward", True), ("quality", True), ("cost_usd", False))


def experiment_summary(rows: Sequence[Mapping[str, Any]], min_samples: int) -> dict[str, Any]:
    """Welch comparisons of every arm against the first (by name) on reward, quality, cost."""
    arms: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in rows:
        arms[row["arm"]].append(row)
    names = sorted(arms)
    summary: dict[str, Any] = {
        "arms": {
            name: {
                "runs": len(arms[name]),
                "success_rate": round(statistics.fmean(r["success"] for r in arms[name]), 4),
            }
            for name in names
        },
        "comparisons": [],
    }
    for other in names[1:]:
        for metric, higher in AB_METRICS:
            result = compare_arms(
                metric,
                [float(r[metric]) for r in arms[names[0]]],
                [float(r[metric]) for r in arms[other]],
                min_samples=min_samples,
                higher_is_better=higher,
            )
            summary["comparisons"].append(
                {"a": names[0], "b": other, **{k: _plain(v) for k, v in vars(result).items()}}
            )
    return summary


def _plain(value: Any) -> Any:
    """JSON-safe: enums by value, infinite statistics as text, floats rounded."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else str(value)
    return value


def changes(
    before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]]
) -> dict[str, dict[str, Any]]:
    """Per task class, how the routing probabilities moved: largest shift and the favourite."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key, {}), after.get(key, {})
        models = set(old) | set(new)
        if not models:
            continue
        shift = max(abs(new.get(m, 0.0) - old.get(m, 0.0)) for m in models)
        out[key] = {
            "max_shift": round(shift, 4),
            "favourite_before": max(old, key=lambda m: old[m]) if old else None,
            "favourite_after": max(new, key=lambda m: new[m]) if new else None,
        }
    return out
