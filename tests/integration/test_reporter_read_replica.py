"""The reporter reads from a read replica when ``TALLY_REPORTER_DATABASE_URL`` names one,
while its API tokens stay on the primary (a token works as soon as it is made)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import insert, select

from tally.db import create_engine
from tally.db.tables import api_tokens, model_scores
from tally.sandbox import sandbox
from tally.settings import TallySettings
from tests.integration.conftest import ADMIN
from tests.integration.test_reporter_auth import make_token

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

STATS = {
    "model": "gpt-5", "task_type": "feature", "band": "medium", "runs": 4, "successes": 3,
    "delivered_points": 15.0, "total_cost_usd": 0.1755, "total_tokens": 40_000,
    "total_hours": 6.0,
    "velocity": {"count": 3, "mean": 2.5, "m2": 0.5, "min": 2.0, "max": 3.0},
    "quality": {"count": 4, "mean": 0.8, "m2": 0.0, "min": 0.8, "max": 0.8},
}  # fmt: skip


async def test_reports_come_from_the_replica_and_tokens_from_the_primary(
    harness: Harness, base_settings: TallySettings, workspace: str
) -> None:
    # A database of its own stands in for the replica: rows only it holds are reported.
    async with sandbox(base_settings, prefix="rr", database=True) as replica:
        engine = create_engine(replica.database_url)
        try:
            async with engine.begin() as conn:
                await conn.execute(
                    insert(model_scores),
                    {"workspace": workspace, "model": "gpt-5", "task_type": "feature",
                     "band": "medium", "samples": 4, "stats": STATS},
                )  # fmt: skip
        finally:
            await engine.dispose()
        reporter = await harness.start("reporter", read_database_url=replica.database_url)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=reporter), base_url="http://t", timeout=30
        ) as http:
            models = await http.get(
                "/models/performance", params={"workspace": workspace}, headers=ADMIN
            )
            assert models.status_code == 200, models.text
            assert [m["model"] for m in models.json()["models"]] == ["gpt-5"]

            made = await make_token(http, workspace, ["reports:read"])
            stored = await harness.scalar(
                select(api_tokens.c.workspace).where(api_tokens.c.token_id == made["token_id"])
            )
            assert stored == workspace  # on the primary
            mine = await http.get(
                "/models/performance",
                params={"workspace": workspace},
                headers={"Authorization": f"Bearer {made['token']}"},
            )
            assert mine.status_code == 200, mine.text
            await harness.stop_all()
