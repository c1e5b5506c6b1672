"""Assignment latency: ``task.estimated`` published → ``task.assigned`` received.

The quota service and the assigner run in-process on a throwaway namespace and database.
N estimated tasks are published one after another, each waiting for its assignment, so
the figure is the latency of one task through the path (JetStream delivery to the
assigner's durable consumer, ranking, the ``quota.reserve`` request/reply with its ledger
row, the assignment row, the publish, delivery to a core-NATS watcher). Interleaved with
them, as the baseline measured in the same run, the bare ``quota.reserve`` round trip:
the one step the assigner cannot skip.

Prints p50/p95/p99 of both and their ratio, and the machine.

Run: ``uv run python benchmarks/assign_latency.py [--tasks N]``. Servers from
``TALLY_NATS_URL``, ``TALLY_DATABASE_URL``, ``TALLY_REDIS_URL``; everything made for the
run is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import platform
import time

import numpy as np
import structlog

from services.assigner.app import create_app as create_assigner
from services.assigner.settings import AssignerSettings
from services.quota.app import create_app as create_quota
from services.quota.settings import QuotaSettings
from tally.client import TallyClient
from tally.events import (
    Estimate,
    ReserveReply,
    ReserveRequest,
    TaskAssigned,
    TaskEstimated,
    TokenEstimate,
    new_id,
)
from tally.sandbox import sandbox
from tally.settings import TallySettings


def estimated(i: int) -> TaskEstimated:
    task_id = f"bench-{i}-{new_id()[:8]}"
    return TaskEstimated(
        task_id=task_id,
        estimate=Estimate(
            task_id=task_id,
            title=f"Task {i}",
            priority="P2",
            labels=("backend",),
            task_type="feature",
            story_points=3,
            band="simple",
            hours_p50=1.0,
            hours_p90=2.0,
            tokens=TokenEstimate(input_tokens=2_000, output_tokens=500),
            value_score=float(i % 100),
        ),
    )


def percentiles(ms: list[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return float(p50), float(p95), float(p99)


async def main(tasks: int) -> None:
    assign_ms: list[float] = []
    reserve_ms: list[float] = []
    async with sandbox(TallySettings(), prefix="ba") as box:
        ns = box.namespace
        apps = [
            create_quota(QuotaSettings(**box.urls())),
            create_assigner(AssignerSettings(**box.urls())),
        ]
        for app in apps:
            await app.start()
        try:
            async with TallyClient.connect(box.nats_url, namespace=ns) as client:
                queue: asyncio.Queue[TaskAssigned]
                async with client.watch(TaskAssigned, lambda e: True) as queue:
                    for i in range(tasks + 20):  # the first 20 warm connections and caches up
                        event = estimated(i)
                        started = time.perf_counter()
                        await client.publish(event)
                        got = await asyncio.wait_for(queue.get(), 10)
                        elapsed = (time.perf_counter() - started) * 1000
                        assert got.task_id == event.task_id
                        started = time.perf_counter()
                        await client.request(
                            ReserveRequest(
                                subscription="local",
                                tokens=1,
                                cost_usd=0,
                                reservation_id=f"{ns}-{i}",
                            ),
                            ReserveReply,
                            step="quota",
                        )
                        if i >= 20:
                            assign_ms.append(elapsed)
                            reserve_ms.append((time.perf_counter() - started) * 1000)
        finally:
            for app in reversed(apps):
                await app.stop()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}"
    )
    print(f"{tasks} tasks, one at a time (ms)")
    a, r = percentiles(assign_ms), percentiles(reserve_ms)
    print("  path                                   p50      p95      p99")
    print("  task.estimated -> task.assigned   " + "".join(f"{v:9.2f}" for v in a))
    print("  quota.reserve round trip (base)   " + "".join(f"{v:9.2f}" for v in r))
    print(
        "  ratio                             "
        + "".join(f"{x / y:8.1f}x" for x, y in zip(a, r, strict=True))
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))
    asyncio.run(main(args.tasks))
