"""Replay public story-point and effort data through the estimator's own interfaces.

Story points: per project, rows in creation order. The first 80% become the workspace's
imported history, as ``tally history import`` stores it (validated ``HistoryRecord`` rows,
turned into the points model's tasks by the same function the estimator's repository
uses); the estimator builds the workspace's points model the way the service does
(:func:`services.estimator.workspace.workspace_points`: the shipped neighbour weights are
checked against the history median on the newest quarter of history, which is the
project's middle 20%, and kept only if they beat it there by 2%); the last 20% is
estimated with the service's ``estimate()``. The test 20% is never seen before it is
scored. Tally is scored by mean absolute error (MAE) of the Fibonacci points users see,
and of the model's raw estimate (a point value the workspace's history uses, so 0 and 0.5
count), against the median and mean of the first 60% (the research's baseline), and of
all the history Tally saw (80%).

Calibration: per project of the effort data, velocity (points per in-progress hour) is
fitted on the first 60% by creation date; the share of the last 20% whose actual hours lie
under the predicted P90 should be about 90%.

Run: ``uv run python benchmarks/estimate.py [--data DIR] [--effort DIR] [--only points]``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

from services.estimator.estimator import DEFAULT_TYPE, estimate
from services.estimator.hours import VelocityModel
from services.estimator.points import PointsQuery, estimate_points
from services.estimator.scoring import ScoringConfig, load_scoring_config
from services.estimator.workspace import historical_task, workspace_points
from tally.events import TaskSpec
from tally.events.plans import HistoryRecord
from tally.events.tasks import MAX_DESCRIPTION_CHARS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POINTS_DIR = ROOT.parent / "shared" / "data" / "storypoints"
DEFAULT_EFFORT_DIR = ROOT.parent / "shared" / "data" / "effort"
CONFIG_PATH = ROOT / "deploy" / "config" / "scoring.yaml"


def _splits(rows: list) -> tuple[list, list, list]:
    n = len(rows)
    return rows[: int(0.6 * n)], rows[int(0.6 * n) : int(0.8 * n)], rows[int(0.8 * n) :]


def _description(row: dict[str, str]) -> str:
    # Tally refuses descriptions over 100 kB; a team importing this export would cut them.
    return (row["description"] or "")[:MAX_DESCRIPTION_CHARS]


def _record(row: dict[str, str]) -> HistoryRecord:
    return HistoryRecord(
        task_id=row["issuekey"],
        title=row["title"],
        description=_description(row),
        story_points=float(row["storypoint"]),
        completed_at=datetime.fromisoformat(row["created"]),
    )


def _mae(predicted: list[float], actual: list[float]) -> float:
    return sum(abs(p - a) for p, a in zip(predicted, actual, strict=True)) / len(actual)


def story_points(data_dir: Path, config: ScoringConfig) -> None:
    """Print the per-project MAE table of Tally against the history baselines."""
    files = sorted(data_dir.glob("*.csv"))
    if not files:
        print(f"story points: no data in {data_dir}; skipped (see ../shared/data/README.md)")
        return
    header = (
        f"{'project':<11}{'n_test':>7}{'tally':>8}{'scale':>8}{'median':>8}{'mean':>8}"
        f"{'med80':>8}{'mean80':>8}  chosen on the middle 20% (MAE there: neighbours / median)"
    )
    print("Story points, MAE on the last 20% (tally = Fibonacci points shown to users;")
    print("scale = the model's raw estimate, a value of the workspace's own point scale;")
    print("median/mean = of the first 60%; med80/mean80 = of the 80% Tally saw as history)")
    print(header)
    print("-" * len(header))
    wins = dict.fromkeys(("median", "mean", "med80", "mean80"), 0)
    ties_median = 0
    scale_better: list[bool] = []
    totals = dict.fromkeys(("tally", "scale", "median", "mean", "med80", "mean80"), 0.0)
    n_total = 0
    for path in files:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        first, middle, test = _splits(rows)
        history = [historical_task(_record(r)) for r in first + middle]
        points = workspace_points(history, config.points)
        actual = [float(r["storypoint"]) for r in test]
        predicted = [
            estimate(TaskSpec(title=r["title"], description=_description(r)), points, config)
            for r in test
        ]
        # The raw value behind the shown points, from the function estimate() calls.
        raw = [
            estimate_points(
                PointsQuery(r["title"], _description(r), DEFAULT_TYPE),
                points.index,
                points.selection.config,
            ).raw
            for r in test
        ]
        h60 = [float(r["storypoint"]) for r in first]
        h80 = [t.story_points for t in history]
        row = {
            "tally": _mae([e.story_points for e in predicted], actual),
            "scale": _mae(raw, actual),
            "median": _mae([statistics.median(h60)] * len(test), actual),
            "mean": _mae([statistics.fmean(h60)] * len(test), actual),
            "med80": _mae([statistics.median(h80)] * len(test), actual),
            "mean80": _mae([statistics.fmean(h80)] * len(test), actual),
        }
        for key in wins:
            better = row["tally"] < row[key] if "med" in key else row["tally"] <= row[key]
            wins[key] += better
        ties_median += abs(row["tally"] - row["median"]) < 1e-9
        scale_better.append(row["scale"] < row["median"])
        for key, value in row.items():
            totals[key] += value * len(test)
        n_total += len(test)
        sel = points.selection
        chosen = f"{sel.model} ({sel.neighbours_mae:.3f} / {sel.median_mae:.3f})"
        print(
            f"{path.stem:<11}{len(test):>7}"
            + "".join(f"{row[k]:>8.3f}" for k in totals)
            + f"  {chosen}"
        )
    print("-" * len(header))
    pooled = "".join(f"{totals[k] / n_total:>8.3f}" for k in totals)
    print(f"{'pooled':<11}{n_total:>7}{pooled}")
    n = len(files)
    scale_wins = sum(scale_better)
    print(
        f"Tally beats the median baseline on {wins['median']}/{n} projects "
        f"(ties {ties_median}); the 80% median on {wins['med80']}/{n}; "
        f"its raw scale value beats the median on {scale_wins}/{n}"
    )
    print(
        f"Tally is not worse than the mean baseline on {wins['mean']}/{n} projects; "
        f"the 80% mean on {wins['mean80']}/{n}"
    )


def _number(value: str) -> float | None:
    return None if value in ("", "NULL") else float(value)


def calibration(effort_dir: Path, config: ScoringConfig) -> None:
    """Print, per project, how often actual hours fall under the predicted P90."""
    files = sorted(effort_dir.glob("*.csv"))
    if not files:
        print(f"calibration: no data in {effort_dir}; skipped (see ../shared/data/README.md)")
        return
    print("\nHours calibration: share of held-out tasks with actual hours <= P90 (target 0.90)")
    header = f"{'project':<12}{'fit':>6}{'n_test':>8}{'<=P50':>8}{'<=P90':>8}  source"
    print(header)
    print("-" * len(header))
    covered50 = covered90 = n_total = 0
    for path in files:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: r["Creation_Date"])
        history, _, test = _splits(rows)
        fit, held = _worked(history), _worked(test)
        if not held:
            print(f"{path.stem:<12}{len(fit):>6}{0:>8}  no held-out task with measured time")
            continue
        model = VelocityModel.from_config(config.velocity).fit([p / h for p, h in fit])
        under50 = sum(h <= model.hours(p).p50 for p, h in held)
        under90 = sum(h <= model.hours(p).p90 for p, h in held)
        covered50, covered90 = covered50 + under50, covered90 + under90
        n_total += len(held)
        print(
            f"{path.stem:<12}{len(fit):>6}{len(held):>8}{under50 / len(held):>8.2f}"
            f"{under90 / len(held):>8.2f}  {model.hours(1).source}"
        )
    print("-" * len(header))
    shares = f"{covered50 / n_total:>8.2f}{covered90 / n_total:>8.2f}"
    print(f"{'overall':<12}{'':>6}{n_total:>8}{shares}")


def _worked(rows: list[dict[str, str]]) -> list[tuple[float, float]]:
    """(points, in-progress hours) of rows where both were measured and positive."""
    pairs = []
    for row in rows:
        points, minutes = _number(row["Story_Point"]), _number(row["In_Progress_Minutes"])
        if points and minutes and points > 0 and minutes > 0:
            pairs.append((points, minutes / 60.0))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_POINTS_DIR)
    parser.add_argument("--effort", type=Path, default=DEFAULT_EFFORT_DIR)
    parser.add_argument("--only", choices=("points", "calibration"))
    args = parser.parse_args()
    # Jira descriptions exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(sys.maxsize)
    config = load_scoring_config(CONFIG_PATH) if CONFIG_PATH.exists() else ScoringConfig()
    started = time.perf_counter()
    if args.only in (None, "points"):
        story_points(args.data, config)
    if args.only in (None, "calibration"):
        calibration(args.effort, config)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
