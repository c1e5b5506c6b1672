"""The benchmarks' reporter (``benchmarks/report.py``) leaves nothing on the bus.

Each start provisions its namespace's streams, among them the dead-letter bodies' object
store, which reserves 1 GiB of the server's storage; left behind after every benchmark
run, they filled the server until no stream could be created."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from benchmarks.report import reporter
from benchmarks.scale import free_port
from tally.events import new_id
from tally.settings import TallySettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


async def stream_names(url: str) -> set[str]:
    nc = await nats.connect(url)
    try:
        return {s.config.name for s in await nc.jetstream().streams_info()}
    finally:
        await nc.close()


async def test_the_benchmark_reporter_deletes_its_streams_when_stopped(
    stack: TallySettings,
) -> None:
    namespace = f"brt{new_id()[:8]}"
    prefix = namespace.upper()
    with reporter(stack.database_url, free_port(), ROOT, namespace=namespace):
        assert any(name.startswith(prefix) for name in await stream_names(stack.nats_url))
    assert not {n for n in await stream_names(stack.nats_url) if n.startswith(prefix)}
