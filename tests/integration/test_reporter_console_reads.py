"""The reads the web console needs beyond the other endpoints: task and run lists with
filters, a window as hourly or daily series (tokens by kind, never summed), the
workspaces a token sees, and who the token is."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

import httpx
import pytest
from sqlalchemy import insert

from tally.commands import task_created
from tally.db.tables import assignments
from tally.events import new_id, utcnow
from tally.sdk import Tally
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

USAGE = {
    "input_tokens": 1000,
    "output_tokens": 200,
    "cache_read_input_tokens": 3000,
    "cache_creation_input_tokens": 400,
}


@dataclass
class Seeded:
    http: httpx.AsyncClient
    workspace: str
    tasks: list[str]
    run_id: str


async def token_for(http: httpx.AsyncClient, workspace: str) -> dict[str, str]:
    made = await http.post(
        "/auth/tokens",
        json={"name": "viewer", "workspace": workspace, "scopes": ["runs:read", "reports:read"]},
    )
    assert made.status_code == 201, made.text
    return {"Authorization": f"Bearer {made.json()['token']}"}


@pytest.fixture
async def seeded(harness: Harness, workspace: str) -> AsyncIterator[Seeded]:
    """Three tasks (the tracker's rows) and one run of the first with two model calls."""
    h = harness
    await h.start("tracker")
    reporter = await h.start("reporter")
    titles = [("Add OAuth login", "P1", "backend"), ("Fix redirect", "P2", "backend")]
    titles.append(("Write the billing export", "P3", "billing"))
    ids = []
    for title, priority, label in titles:
        event = task_created(
            source="cli", workspace=workspace, title=title, priority=priority, labels=[label]
        )
        await h.client.publish(event)
        ids.append(event.task_id)
    assignment_id = f"a-{new_id()}"
    await h.execute(
        insert(assignments).values(
            assignment_id=assignment_id,
            task_id=ids[0],
            workspace=workspace,
            model="claude-sonnet-4",
            subscription="claude-max",
            strategy="maximize_value",
            reservation_id=f"res-{new_id()}",
            detail={},
        )
    )
    t = Tally(h.client, workspace)
    run_id = f"R-{new_id()[:10]}"
    async with t.run(
        ids[0], model="claude-sonnet-4", run_id=run_id, assignment_id=assignment_id
    ) as run:
        for worker in ("planner", "coder"):
            await run.worker_call(worker=worker, usage=USAGE, latency_ms=500)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:

        async def recorded() -> bool:
            got = (await http.get("/runs", params={"workspace": workspace})).json()["runs"]
            listed = (await http.get("/tasks", params={"workspace": workspace})).json()
            return bool(got and got[0]["finished_at"] and len(listed["tasks"]) == 3)

        await h.eventually(recorded, what="the run and the tasks recorded")
        yield Seeded(http, workspace, ids, run_id)


async def test_tasks_are_listed_newest_first_and_filtered(seeded: Seeded) -> None:
    http, ws = seeded.http, seeded.workspace

    async def ids(**params: str | int) -> list[str]:
        got = await http.get("/tasks", params={"workspace": ws, **params})
        assert got.status_code == 200, got.text
        return [t["task_id"] for t in got.json()["tasks"]]

    listed = (await http.get("/tasks", params={"workspace": ws})).json()["tasks"]
    assert sorted(t["task_id"] for t in listed) == sorted(seeded.tasks)
    created = [t["created_at"] for t in listed]
    assert created == sorted(created, reverse=True)  # newest first
    assert await ids(q="billing export") == [seeded.tasks[2]]
    assert await ids(q="OAUTH") == [seeded.tasks[0]]
    assert await ids(q="100%_") == []
    assert await ids(priority="P2") == [seeded.tasks[1]]
    assert sorted(await ids(label="backend")) == sorted(seeded.tasks[:2])
    # The run moved its task to work and then review (a successful run).
    assert await ids(lane="review") == [seeded.tasks[0]]
    assert sorted(await ids(lane="backlog")) == sorted(seeded.tasks[1:])
    first = (await http.get("/tasks", params={"workspace": ws, "q": "OAuth"})).json()["tasks"][0]
    assert (first["status"], first["lane"], first["runs"]) == ("ready_to_review", "review", 1)
    page = (await http.get("/tasks", params={"workspace": ws, "limit": 2})).json()
    assert len(page["tasks"]) == 2 and page["more"] is True
    bad = await http.get("/tasks", params={"lane": "qa-ish"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "lane"


async def test_runs_list_their_tokens_by_kind_and_cost(seeded: Seeded) -> None:
    got = await seeded.http.get("/runs", params={"task_id": seeded.tasks[0]})
    assert got.status_code == 200, got.text
    [run] = got.json()["runs"]
    assert run["run_id"] == seeded.run_id and run["success"] is True
    assert (run["calls"], run["input_tokens"], run["output_tokens"]) == (2, 2000, 400)
    assert (run["cache_read_tokens"], run["cache_write_tokens"]) == (6000, 800)
    assert run["cost_micros"] > 0 and run["unpriced_calls"] == 0
    assert Decimal(run["cost_usd"]) * 1_000_000 == run["cost_micros"]


async def test_a_window_as_a_series_agrees_with_the_totals(seeded: Seeded) -> None:
    http, ws = seeded.http, seeded.workspace
    series = (await http.get("/dashboard/series", params={"workspace": ws, "since": "6h"})).json()
    stats = (await http.get("/dashboard/stats", params={"workspace": ws, "since": "6h"})).json()
    assert series["bucket"] == "hour" and len(series["points"]) in (6, 7)
    for kind in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert sum(p[kind] for p in series["points"]) == stats[kind], kind
    assert sum(p["spend_micros"] for p in series["points"]) == stats["spend_micros"]
    assert sum(p["runs_finished"] for p in series["points"]) == 1
    [sub] = series["by_subscription"]
    assert (sub["subscription"], sub["calls"], sub["cache_read_tokens"]) == ("claude-max", 2, 6000)
    assert sub["spend_micros"] == stats["spend_micros"]
    assert series["routing"] == [{"model": "claude-sonnet-4", "assignments": 1, "share": 1.0}]
    daily = (await http.get("/dashboard/series", params={"workspace": ws, "since": "7d"})).json()
    assert daily["bucket"] == "day" and len(daily["points"]) in (7, 8)
    too_far = await http.get("/dashboard/series", params={"since": "400w", "bucket": "hour"})
    assert too_far.status_code == 400 and too_far.json()["error"]["field"] == "since"
    future = (utcnow().replace(year=utcnow().year + 1)).isoformat()
    ahead = await http.get("/dashboard/series", params={"since": future})
    assert ahead.status_code == 400 and ahead.json()["error"]["field"] == "since"


async def test_a_workspace_token_sees_only_its_workspace(seeded: Seeded) -> None:
    http, ws = seeded.http, seeded.workspace
    mine, other = await token_for(http, ws), await token_for(http, f"ws-{new_id()[:8]}")
    me = (await http.get("/auth/me", headers=mine)).json()
    assert (me["workspace"], me["operator"]) == (ws, False)
    assert me["allows"] == ["runs:read", "reports:read"]
    operator = (await http.get("/auth/me")).json()
    assert operator["operator"] is True and "quota:admin" in operator["allows"]
    assert (await http.get("/workspaces", headers=mine)).json() == {"workspaces": [ws]}
    assert ws in (await http.get("/workspaces")).json()["workspaces"]
    assert len((await http.get("/tasks", headers=mine)).json()["tasks"]) == 3
    assert (await http.get("/tasks", headers=other)).json()["tasks"] == []
    assert (await http.get("/runs", headers=other)).json()["runs"] == []
    named = await http.get("/runs", headers=other, params={"workspace": ws})
    assert named.status_code == 404 and named.json()["error"]["field"] == "workspace"
    series = (await http.get("/dashboard/series", headers=other)).json()
    assert series["by_subscription"] == [] and series["routing"] == []


async def test_a_call_stamped_ahead_of_the_reporters_clock_stays_in_the_series(
    harness: Harness, workspace: str
) -> None:
    await harness.start("tracker")
    reporter = await harness.start("reporter")
    t = Tally(harness.client, workspace)
    ahead = utcnow() + timedelta(hours=3)
    async with t.run(f"T-{new_id()[:8]}", model="claude-sonnet-4", lanes=None) as run:
        await run.worker_call(worker="coder", usage=USAGE, at=ahead)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=reporter), base_url="http://t", headers=ADMIN
    ) as http:
        params = {"workspace": workspace, "since": "6h"}

        async def stats() -> dict[str, int] | None:
            got: dict[str, int] = (await http.get("/dashboard/stats", params=params)).json()
            return got if got["input_tokens"] else None

        totals = await harness.eventually(stats, what="the call's tokens")
        series = (await http.get("/dashboard/series", params=params)).json()
    assert sum(p["input_tokens"] for p in series["points"]) == totals["input_tokens"] == 1000
    assert series["points"][-1]["start"] > series["now"]
