"""Admin commands answer the requester: a refused request is an exit-2 message naming the
problem, not a dead letter (a dead letter is for messages nobody is waiting on)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner, Result

from tally.cli.main import app
from tally.events import new_id

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def cli(h: Harness, *args: str) -> Result:
    env = {
        "TALLY_NATS_URL": h.settings.nats_url,
        "TALLY_NAMESPACE": h.settings.namespace,
        "TALLY_TIMEOUT_S": "5",
    }
    return await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)


async def test_refused_admin_requests_exit_2_with_the_reason_and_leave_no_dead_letter(
    harness: Harness,
) -> None:
    h = harness
    await h.start("assigner")
    await h.start("quota")
    name = f"exp-{new_id()[:8]}"
    arms = ["--variant", "A:strategy=learned", "--variant", "B:strategy=cheapest_capable"]
    async with h.dead_letters("assigner") as assigner_dlq, h.dead_letters("quota") as quota_dlq:
        created = await cli(h, "experiment", "create", name, *arms)
        assert created.exit_code == 0, created.output

        again = await cli(h, "experiment", "create", name, *arms)
        assert again.exit_code == 2
        assert f"an experiment called {name!r} exists" in again.output

        bad = await cli(
            h, "experiment", "create", f"{name}-2", *arms, "--variant", "C:strategy=nope"
        )
        assert bad.exit_code == 2
        assert "unknown strategy 'nope'" in bad.output

        ghost = await cli(h, "quota", "freeze", "ghost")
        assert ghost.exit_code == 2 and "unknown subscription 'ghost'" in ghost.output

        stop = await cli(h, "experiment", "stop", f"{name}-missing")
        assert stop.exit_code == 2 and "no experiment called" in stop.output
        # A valid request after them: any dead letter of the refusals came before its answer.
        assert (await cli(h, "experiment", "list")).exit_code == 0
    assert "Traceback" not in again.output + bad.output + ghost.output
    assert assigner_dlq.empty() and quota_dlq.empty()
