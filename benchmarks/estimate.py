"""Replay public story-point and effort data through the estimator's own code.

Protocol, fixed before looking at any result: per project, rows in creation order; the
first 60% are history, the middle 20% validation, the last 20% test. Every choice of
model, features and hyper-parameters was made with ``--part validation`` (history = the
first 60%, scored on the middle 20%); ``--part test`` (the default) gives the model the
first 80% as history — what a team would have imported — and scores the last 20%, which
is looked at once per final design.

Story points: the workspace's model is built as the service builds it
(:func:`services.estimator.workspace.build_workspace` on ``HistoryRecord`` rows, with the
shipped ``deploy/config/scoring.yaml``; with ``points.check_against_median`` each workspace
also checks its model against its median by rolling origin inside its history only) and each
test issue is estimated with the service's ``estimate()``. Scored by mean absolute error (MAE)
of the points users see against the median and mean of the first 60% (the research's
baselines; the 80% median is printed too), with a paired Wilcoxon signed-rank test on
absolute errors per project (two-sided, ties dropped).

Hours: per project of the effort data, measured in-progress hours of the history are the
samples of the estimator's hours model; P50/P90 for each test task from its story points
are scored by coverage and pinball (quantile) loss against the per-points-value empirical
quantiles of the same history (all history for a value it has not seen).

Throughput and cold start: a 3,000-issue workspace built from the public issues; estimates
per second on it warm, and 16 concurrent first estimates on a cold 2,000-issue workspace
through the service's single-flight cache (an in-memory repository).

Run: ``uv run python benchmarks/estimate.py [--part validation|test] [--only ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import numpy as np
from scipy import stats

from services.estimator.cache import WorkspaceCache
from services.estimator.estimator import estimate
from services.estimator.hours import Duration, HoursModel
from services.estimator.points_model import HistoricalTask
from services.estimator.scoring import ScoringConfig, load_scoring_config
from services.estimator.workspace import WorkspaceModel, build_workspace, historical_task
from tally.events import TaskSpec
from tally.events.plans import HistoryRecord
from tally.events.tasks import MAX_DESCRIPTION_CHARS

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POINTS_DIR = ROOT.parent / "shared" / "data" / "storypoints"
DEFAULT_EFFORT_DIR = ROOT.parent / "shared" / "data" / "effort"
CONFIG_PATH = ROOT / "deploy" / "config" / "scoring.yaml"


def _cuts(n: int) -> tuple[int, int]:
    return int(0.6 * n), int(0.8 * n)


def _description(row: dict[str, str]) -> str:
    # Tally refuses descriptions over 100 kB; a team importing this export would cut them.
    return (row["description"] or "")[:MAX_DESCRIPTION_CHARS]


def _record(row: dict[str, str]) -> HistoryRecord:
    return HistoryRecord(
        task_id=row["issuekey"],
        title=row["title"] or "(untitled)",
        description=_description(row),
        story_points=float(row["storypoint"]),
        completed_at=datetime.fromisoformat(row["created"]),
    )


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _wilcoxon(a: np.ndarray, b: np.ndarray) -> float:
    if np.allclose(a, b):
        return 1.0
    return float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)


def story_points(data_dir: Path, config: ScoringConfig, part: str) -> None:
    """Print the per-project MAE table of Tally against the history baselines."""
    files = sorted(data_dir.glob("*.csv"))
    if not files:
        print(f"story points: no data in {data_dir}; skipped (see ../shared/data/README.md)")
        return
    seen = 60 if part == "validation" else 80
    print(f"Story points, MAE on the {part} part (history: the first {seen}%)")
    header = (
        f"{'project':<11}{'n':>5}{'tally':>8}{'median':>8}{'mean':>8}{'hist':>8}"
        f"{'p(W)':>8}  source (weight; inside-history MAE model / median)"
    )
    print(header)
    print("-" * len(header))
    wins = not_worse_mean = 0
    totals: dict[str, float] = defaultdict(float)
    n_total = 0
    for path in files:
        rows = _read(path)
        first, second = _cuts(len(rows))
        seen = rows[:first] if part == "validation" else rows[:second]
        scored = rows[first:second] if part == "validation" else rows[second:]
        history = [historical_task(_record(r)) for r in seen]
        workspace = build_workspace(history, (), config)
        actual = np.array([float(r["storypoint"]) for r in scored])
        predicted = np.array(
            [
                estimate(
                    TaskSpec(title=r["title"] or "(untitled)", description=_description(r)),
                    workspace,
                    config,
                ).story_points
                for r in scored
            ]
        )
        h60 = [float(r["storypoint"]) for r in rows[:first]]
        h80 = [t.story_points for t in history]
        errors = np.abs(predicted - actual)
        med_errors = np.abs(statistics.median(h60) - actual)
        row = {
            "tally": errors.mean(),
            "median": med_errors.mean(),
            "mean": np.abs(statistics.fmean(h60) - actual).mean(),
            "med80": np.abs(statistics.median(h80) - actual).mean(),
        }
        p = _wilcoxon(errors, med_errors)
        wins += row["tally"] < row["median"] - 1e-12
        not_worse_mean += row["tally"] <= row["mean"] + 1e-12
        for key, value in row.items():
            totals[key] += value * len(actual)
        n_total += len(actual)
        assert workspace.points is not None
        fit = workspace.points.fit
        source = "model" if fit.beats_median else "median"
        inside = f"{fit.model_mae:.3f} / {fit.median_mae:.3f}" if fit.model_mae is not None else "-"
        print(
            f"{path.stem:<11}{len(actual):>5}"
            + "".join(f"{row[k]:>8.3f}" for k in ("tally", "median", "mean", "med80"))
            + f"{p:>8.3f}  {source} ({fit.weight:.1f}; {inside})"
        )
    print("-" * len(header))
    pooled = "".join(f"{totals[k] / n_total:>8.3f}" for k in ("tally", "median", "mean", "med80"))
    print(f"{'pooled':<11}{n_total:>5}{pooled}")
    n = len(files)
    print(
        f"Tally beats the median baseline on {wins}/{n} projects, is not worse than the mean "
        f"on {not_worse_mean}/{n}; pooled MAE {totals['tally'] / totals['median']:.3f}x the "
        f"median's, {totals['tally'] / totals['mean']:.3f}x the mean's"
    )


def _number(value: str) -> float | None:
    return None if value in ("", "NULL") else float(value)


def _worked(rows: list[dict[str, str]]) -> list[tuple[float, float]]:
    """(points, in-progress hours) of rows where both were measured and positive."""
    pairs = []
    for row in rows:
        points, minutes = _number(row["Story_Point"]), _number(row["In_Progress_Minutes"])
        if points and minutes and points > 0 and minutes > 0:
            pairs.append((points, minutes / 60.0))
    return pairs


def _pinball(actual: np.ndarray, predicted: np.ndarray, q: float) -> float:
    d = actual - predicted
    return float(np.mean(np.maximum(q * d, (q - 1.0) * d)))


def _empirical(history: list[tuple[float, float]], points: float, q: float) -> float:
    same = [h for p, h in history if p == points] or [h for _, h in history]
    return float(np.quantile(same, q))


def hours(effort_dir: Path, config: ScoringConfig, part: str) -> None:
    """Print, per project, coverage and pinball loss of P50/P90 against the baseline."""
    files = sorted(effort_dir.glob("*.csv"))
    if not files:
        print(f"hours: no data in {effort_dir}; skipped (see ../shared/data/README.md)")
        return
    print(f"\nHours (in-progress time) from story points, {part} part: coverage and pinball")
    header = (
        f"{'project':<11}{'n':>5}{'<=P50':>7}{'<=P90':>7}{'pin50':>8}{'base':>8}"
        f"{'pin90':>8}{'base':>8}{'b<=P90':>7}"
    )
    print(header)
    print("-" * len(header))
    sums: dict[str, float] = defaultdict(float)
    n_total = 0
    for path in files:
        rows = sorted(_read(path), key=lambda r: r["Creation_Date"])
        first, second = _cuts(len(rows))
        seen = _worked(rows[:first] if part == "validation" else rows[:second])
        scored = _worked(rows[first:second] if part == "validation" else rows[second:])
        if not scored or not seen:
            print(f"{path.stem:<11}{len(scored):>5}  no measured task in history or test")
            continue
        model = HoursModel([Duration(p, h) for p, h in seen], config.velocity)
        actual = np.array([h for _, h in scored])
        ests = [model.hours(p) for p, _ in scored]
        p50, p90 = np.array([e.p50 for e in ests]), np.array([e.p90 for e in ests])
        b50 = np.array([_empirical(seen, p, 0.5) for p, _ in scored])
        b90 = np.array([_empirical(seen, p, 0.9) for p, _ in scored])
        row = {
            "c50": float(np.mean(actual <= p50)),
            "c90": float(np.mean(actual <= p90)),
            "pin50": _pinball(actual, p50, 0.5),
            "base50": _pinball(actual, b50, 0.5),
            "pin90": _pinball(actual, p90, 0.9),
            "base90": _pinball(actual, b90, 0.9),
            "bc90": float(np.mean(actual <= b90)),
        }
        for key, value in row.items():
            sums[key] += value * len(actual)
        n_total += len(actual)
        print(
            f"{path.stem:<11}{len(actual):>5}{row['c50']:>7.2f}{row['c90']:>7.2f}"
            f"{row['pin50']:>8.1f}{row['base50']:>8.1f}{row['pin90']:>8.1f}{row['base90']:>8.1f}"
            f"{row['bc90']:>7.2f}"
        )
    print("-" * len(header))
    s = {k: v / n_total for k, v in sums.items()}
    print(
        f"{'pooled':<11}{n_total:>5}{s['c50']:>7.3f}{s['c90']:>7.3f}{s['pin50']:>8.2f}"
        f"{s['base50']:>8.2f}{s['pin90']:>8.2f}{s['base90']:>8.2f}{s['bc90']:>7.3f}"
    )


def _public_tasks(data_dir: Path, count: int) -> list[HistoricalTask]:
    tasks: list[HistoricalTask] = []
    for path in sorted(data_dir.glob("*.csv"), key=lambda p: -p.stat().st_size):
        tasks += [historical_task(_record(r)) for r in _read(path)]
        if len(tasks) >= count:
            break
    return tasks[:count]


async def _cold_concurrent(
    model_build: float, history: list[HistoricalTask], config: ScoringConfig
) -> None:
    async def fingerprint(_: str) -> tuple[int, int]:
        return len(history), 0

    async def build(_: str) -> WorkspaceModel:
        return await asyncio.to_thread(build_workspace, history, (), config)

    cache = WorkspaceCache(fingerprint, build)
    spec = TaskSpec(title="Fix the login redirect", description="after OAuth callback")

    async def one() -> None:
        estimate(spec, await cache.get("cold"), config)

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(16)))
    elapsed = time.perf_counter() - started
    print(
        f"16 concurrent first estimates on a cold {len(history):,}-issue workspace: "
        f"{elapsed:.1f} s, {cache.builds['cold']} build(s) (one build alone: {model_build:.1f} s)"
    )


def throughput(data_dir: Path, config: ScoringConfig) -> None:
    """Build time, warm estimates per second, and the cold-start single flight."""
    history = _public_tasks(data_dir, 3000)
    if len(history) < 3000:
        print(f"\nthroughput: not enough public issues in {data_dir}; skipped")
        return
    print("\nThroughput (one process, in-process estimate() calls, no bus)")
    started = time.perf_counter()
    workspace = build_workspace(history, (), config)
    build_s = time.perf_counter() - started
    print(f"build a 3,000-issue workspace: {build_s:.1f} s")
    specs = [TaskSpec(title=t.title, description=t.description) for t in history]
    started, cpu = time.perf_counter(), time.process_time()
    for spec in specs:
        estimate(spec, workspace, config)
    rate = len(specs) / (time.perf_counter() - started)
    per_cpu = len(specs) / (time.process_time() - cpu)
    print(
        f"warm estimates: {rate:,.0f} issues/s ({per_cpu:,.0f} per CPU-second) over "
        f"{len(specs):,} issues (target >= 500)"
    )
    cold = history[:2000]
    started = time.perf_counter()
    build_workspace(cold, (), config)
    one_build = time.perf_counter() - started
    asyncio.run(_cold_concurrent(one_build, cold, config))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_POINTS_DIR)
    parser.add_argument("--effort", type=Path, default=DEFAULT_EFFORT_DIR)
    parser.add_argument("--part", choices=("validation", "test"), default="test")
    parser.add_argument("--only", choices=("points", "hours", "throughput"))
    args = parser.parse_args()
    # Jira descriptions exceed the csv module's default 128 KiB field limit.
    csv.field_size_limit(sys.maxsize)
    config = load_scoring_config(CONFIG_PATH) if CONFIG_PATH.exists() else ScoringConfig()
    started = time.perf_counter()
    if args.only in (None, "points"):
        story_points(args.data, config, args.part)
    if args.only in (None, "hours"):
        hours(args.effort, config, args.part)
    if args.only in (None, "throughput"):
        throughput(args.data, config)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
