"""Short versions of the fault drills (``make chaos`` runs the full ones).

The six services run as their own processes, as in production: the tracker is killed
with ``kill -9`` while runs stream in, and hundreds of messages no service should accept
are published on every consumed subject. What a user would check must hold: every event
stored once, every run's totals and its quota settlement equal to what the agents
reported, every bad message dead-lettered with a reason, every ``/healthz`` green.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tally.sandbox import sandbox
from tally.settings import TallySettings
from tests.chaos.deployment import Deployment, deploy_on, table
from tests.chaos.drills import fuzz_drill, kill_drill

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def deployment(
    stack: TallySettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    """The six services in a namespace of their own (fast ack_wait: see ``drills.FAST``)."""
    workdir = tmp_path_factory.mktemp("drills")
    async with (
        sandbox(stack, prefix="dr", database=False) as s,
        deploy_on(s, workdir) as d,
    ):
        yield d


async def test_a_tracker_killed_mid_stream_loses_and_miscounts_nothing(
    deployment: Deployment,
) -> None:
    row = await kill_drill(
        None,
        deployment.fleet.logs,
        runs=20,
        per_run=50,
        kills=(("tracker", 0.4),),
        settle_s=90,
        rate=200,
        deployment=deployment,
    )
    assert row.published == row.stored == 1_000, table([row])
    assert (row.lost, row.duplicated, row.wrong) == (0, 0, 0), table([row])


async def test_fuzzed_messages_are_all_dead_lettered_and_every_service_lives(
    deployment: Deployment,
) -> None:
    row = await fuzz_drill(
        None, deployment.fleet.logs, n=500, two_mb=False, big=2, deployment=deployment
    )
    assert row.published == row.stored == 500, table([row])
    assert (row.lost, row.duplicated, row.wrong) == (0, 0, 0), table([row])
