"""Warm estimates per second as history grows: 2,000 and 10,000 past issues in a workspace.

Builds a workspace from the public story-point issues (largest projects first; no
servers), then estimates 500 of them one at a time through ``estimate()``, the function
the service calls, and prints estimates per CPU-second and per wall second. With
``--before DIR`` the same measurement runs on another checkout's estimator (its
``libs/`` and ``services/``, in a subprocess), interleaved with this one, and the ratio
is printed: the machine's load is shared by both.

Run: ``uv run python -m benchmarks.estimate_scale [--before DIR]`` (part of
``make bench-estimate``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "storypoints"
SIZES = (2_000, 10_000)
QUERIES = 500


def measure(size: int) -> dict[str, float]:
    """Build a ``size``-issue workspace and time warm estimates on it (this process)."""
    from services.estimator.estimator import estimate
    from services.estimator.points_model import HistoricalTask
    from services.estimator.scoring import load_scoring_config
    from services.estimator.workspace import build_workspace
    from tally.events import TaskSpec

    csv.field_size_limit(sys.maxsize)
    rows: list[HistoricalTask] = []
    for path in sorted(DATA.glob("*.csv"), key=lambda p: -p.stat().st_size):
        with path.open(encoding="utf-8", newline="") as handle:
            for r in csv.DictReader(handle):
                rows.append(
                    HistoricalTask(
                        r["issuekey"],
                        r["title"] or "(untitled)",
                        (r["description"] or "")[:100_000],
                        float(r["storypoint"]),
                    )
                )
    if len(rows) < size:
        raise SystemExit(f"only {len(rows)} public issues in {DATA}; need {size}")
    config = load_scoring_config(ROOT / "deploy" / "config" / "scoring.yaml")
    started = time.perf_counter()
    workspace = build_workspace(rows[:size], [], config)
    build_s = time.perf_counter() - started
    specs = [TaskSpec(title=r.title, description=r.description) for r in rows[-QUERIES:]]
    for spec in specs[:20]:
        estimate(spec, workspace, config)
    wall, cpu = time.perf_counter(), time.process_time()
    for spec in specs:
        estimate(spec, workspace, config)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"build_s": build_s, "per_cpu_s": QUERIES / cpu, "per_s": QUERIES / wall}


def run(size: int, source: Path) -> dict[str, float]:
    """``measure(size)`` in a fresh interpreter on ``source``'s code."""
    env = {**os.environ, "PYTHONPATH": f"{source / 'libs'}:{source}:{ROOT}"}
    code = (
        "import json, sys; from benchmarks.estimate_scale import measure; "
        f"print(json.dumps(measure({size})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=source, capture_output=True, text=True
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="a checkout to compare against")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{'history':>8} {'code':>7} {'build s':>8} {'est/CPU-s':>10} {'est/s':>7}")
    for size in SIZES:
        found: dict[str, list[dict[str, float]]] = {"after": [], "before": []}
        for _ in range(args.repeats):
            found["after"].append(run(size, ROOT))
            if args.before:
                found["before"].append(run(size, args.before))
        for name, results in found.items():
            if not results:
                continue
            med = {k: statistics.median(r[k] for r in results) for k in results[0]}
            print(
                f"{size:>8,} {name:>7} {med['build_s']:8.1f} {med['per_cpu_s']:10.0f} "
                f"{med['per_s']:7.0f}"
            )
        if args.before:
            ratio = statistics.median(r["per_cpu_s"] for r in found["after"]) / statistics.median(
                r["per_cpu_s"] for r in found["before"]
            )
            print(f"{size:>8,} after/before (estimates per CPU-second): {ratio:.2f}x")


if __name__ == "__main__":
    main()
