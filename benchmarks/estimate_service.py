"""The estimator's service path on real Postgres: history import, cold builds, warm estimates.

Uses a sandbox database (created and dropped) and the public story-point issues:
history import rows/s through the estimator's repository (batches of 500, as
``tally history import`` sends them), then 16 concurrent first estimates on a cold
2,000-issue workspace through the service's ``Estimator`` (single-flight build in a
thread), against one build alone, and warm estimate-only throughput on a 3,000-issue
workspace (in-process calls: the NATS round trip is not included).

Run: ``uv run python benchmarks/estimate_service.py`` (needs Postgres and NATS, as
``make bench-estimate`` starts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import logging
import sys
import time
from pathlib import Path

import structlog

from services.estimator.handlers import Estimator
from services.estimator.repo import EstimatorRepo
from services.estimator.scoring import load_scoring_config
from tally.db import create_engine
from tally.events import TaskSpec
from tally.events.plans import MAX_HISTORY_BATCH, HistoryRecord
from tally.sandbox import sandbox
from tally.settings import TallySettings

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "storypoints"


def records(count: int) -> list[HistoryRecord]:
    """The first ``count`` public issues (largest projects first), as history rows."""
    out: list[HistoryRecord] = []
    for path in sorted(DATA.glob("*.csv"), key=lambda p: -p.stat().st_size):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                out.append(
                    HistoryRecord(
                        task_id=row["issuekey"],
                        title=row["title"] or "(untitled)",
                        description=(row["description"] or "")[:100_000],
                        story_points=float(row["storypoint"]),
                    )
                )
        if len(out) >= count:
            break
    return out[:count]


async def main() -> None:
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    csv.field_size_limit(sys.maxsize)
    rows = records(3000)
    if len(rows) < 3000:
        print(f"estimate service: not enough public issues in {DATA}; skipped")
        return
    config = load_scoring_config(ROOT / "deploy" / "config" / "scoring.yaml")
    async with contextlib.AsyncExitStack() as stack:
        settings = await stack.enter_async_context(sandbox(TallySettings(), prefix="bench"))
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        repo = EstimatorRepo(engine)

        started = time.perf_counter()
        for i in range(0, len(rows), MAX_HISTORY_BATCH):
            await repo.import_history("big", rows[i : i + MAX_HISTORY_BATCH])
        rate = len(rows) / (time.perf_counter() - started)
        print(f"history import: {rate:,.0f} rows/s over {len(rows):,} rows (target >= 2,000)")
        for i in range(0, 2000, MAX_HISTORY_BATCH):
            await repo.import_history("cold", rows[i : min(i + MAX_HISTORY_BATCH, 2000)])

        spec = TaskSpec(title="Fix the login redirect", description="after the OAuth callback")
        alone = Estimator(repo, config)
        started = time.perf_counter()
        await alone.estimate(spec, "cold", None)
        one = time.perf_counter() - started

        shared = Estimator(repo, config)
        started = time.perf_counter()
        await asyncio.gather(*(shared.estimate(spec, "cold", None) for _ in range(16)))
        many = time.perf_counter() - started
        print(
            f"cold 2,000-issue workspace: one first estimate {one:.1f} s; 16 concurrent first "
            f"estimates {many:.1f} s with {shared.workspaces.builds['cold']} build(s)"
        )

        started = time.perf_counter()
        await shared.estimate(spec, "big", None)
        first = time.perf_counter() - started
        print(f"cold 3,000-issue workspace: first estimate (load + build) {first:.1f} s")
        specs = [TaskSpec(title=r.title, description=r.description) for r in rows]
        started, cpu = time.perf_counter(), time.process_time()
        for s in specs:
            await shared.estimate(s, "big", None)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        print(
            f"warm estimates on it: {len(specs) / wall:,.0f} issues/s "
            f"({len(specs) / cpu:,.0f} per CPU-second) over {len(specs):,} issues (target >= 500)"
        )


if __name__ == "__main__":
    asyncio.run(main())
