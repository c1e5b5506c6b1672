"""``/learning/jobs`` over HTTP: start, follow, list, cancel and promote, with scopes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.integration.conftest import ADMIN
from tests.integration.test_learning_jobs import JOBS, seed

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


async def test_jobs_are_started_followed_cancelled_and_promoted_over_http(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await seed(h, workspace)
    await h.start("learner", **JOBS)
    app = await h.start("reporter")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ADMIN, timeout=30
    ) as http:
        config = {"reward": "outcome_shaped", "lr": 0.1, "iterations": 4, "eval_every": 2}
        resp = await http.post("/learning/jobs", json={"workspace": workspace, "config": config})
        assert resp.status_code == 202, resp.text
        job_id = resp.json()["job_id"]

        async def finished() -> dict[str, Any] | None:
            got = (await http.get(f"/learning/jobs/{job_id}")).json()
            return got if got["status"] in ("completed", "failed") else None

        job = await h.eventually(finished, timeout=60, what="the job to finish")
        assert job["status"] == "completed", job["error"]
        assert job["report"]["summary"]["p_value"] is not None

        promoted = await http.post(f"/learning/jobs/{job_id}/promote", json={"note": "better"})
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["promoted"]["note"] == "better"

        long = await http.post(
            "/learning/jobs", json={"workspace": workspace, "config": {"iterations": 1_000_000}}
        )
        long_id = long.json()["job_id"]
        cancelled = await http.post(f"/learning/jobs/{long_id}/cancel")
        assert cancelled.status_code == 200
        assert cancelled.json()["cancel_requested"] is True

        listed = await http.get("/learning/jobs", params={"workspace": workspace})
        assert {j["job_id"] for j in listed.json()["jobs"]} == {job_id, long_id}

        unknown = await http.get("/learning/jobs/job-nope")
        assert unknown.status_code == 404
        assert unknown.json()["error"]["field"] == "job_id"
        bad = await http.post(
            "/learning/jobs", json={"workspace": workspace, "config": {"reward": "nope"}}
        )
        assert bad.status_code == 400
        assert "reward: no reward named 'nope'" in bad.json()["error"]["message"]

        token = await http.post(
            "/auth/tokens",
            json={"name": "reader", "workspace": workspace, "scopes": ["reports:read"]},
        )
        reader = {"Authorization": f"Bearer {token.json()['token']}"}
        refused = await http.post(
            "/learning/jobs", json={"workspace": workspace, "config": {}}, headers=reader
        )
        assert refused.status_code == 403
        readable = await http.get(f"/learning/jobs/{job_id}", headers=reader)
        assert readable.status_code == 200
