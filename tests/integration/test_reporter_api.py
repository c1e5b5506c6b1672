"""The reporter's typed HTTP API: one error shape, OpenAPI 3.1, and commands for programs.

Commands go onto the bus exactly as the CLI sends them; the services own what happens
next, and the API reads the result back from their tables.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import insert

from tally.db.tables import experiments, model_scores
from tally.events import TaskCreated, TaskStatusChanged, new_id
from tests.integration.conftest import ADMIN, eventually

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration


def client(app: AsgiFastStream) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=ADMIN, timeout=30
    )


@pytest.fixture
async def chain(harness: Harness) -> AsyncIterator[httpx.AsyncClient]:
    """Estimator, assigner, quota, tracker and the reporter, with an HTTP client on it."""
    for service in ("quota", "estimator", "assigner", "tracker"):
        await harness.start(service)
    reporter = await harness.start("reporter")
    async with client(reporter) as http:
        yield http


async def test_every_error_has_one_json_shape_naming_the_field(harness: Harness) -> None:
    reporter = await harness.start("reporter", api_max_wait_s=0.5)
    async with client(reporter) as http:
        cases: list[tuple[str, str, dict[str, Any] | None, int, str, str | None]] = [
            # method, path, json body, status, code, field
            ("GET", "/runs/%00/kpi", None, 400, "bad_parameter", "run_id"),
            ("GET", "/tokens?since=99999999d", None, 400, "bad_parameter", "since"),
            ("GET", "/tokens?colour=red", None, 400, "unknown_parameter", "colour"),
            ("GET", "/runs/r1?verbose=1", None, 400, "unknown_parameter", "verbose"),
            ("GET", "/export/token_usage?outcome=x", None, 400, "bad_parameter", "outcome"),
            ("GET", "/no/such/path", None, 404, "not_found", None),
            ("GET", f"/tasks/T-{new_id()}", None, 404, "not_found", "task_id"),
            ("DELETE", "/tokens", None, 405, "method_not_allowed", None),
            ("POST", "/tasks", {"title": ""}, 422, "invalid_body", "title"),
            ("POST", "/tasks", {"title": "x", "colour": 1}, 422, "invalid_body", "colour"),
            ("POST", "/tasks", {"title": "a\u0000b"}, 422, "invalid_body", "title"),
            ("POST", "/tasks/T-1/status", {"to_status": "done"}, 422, "invalid_body", "to_status"),
            # Nobody answers estimates in this test: the API says so, it does not hang.
            ("POST", "/estimate", {"title": "Fix the login"}, 504, "timeout", None),
        ]
        for method, path, body, status, code, field in cases:
            resp = await http.request(method, path, json=body)
            assert resp.status_code == status, (path, resp.text)
            assert resp.headers["content-type"] == "application/json", path
            error = resp.json()["error"]
            assert (error["code"], error["field"]) == (code, field), (path, error)
            assert error["message"].startswith(f"{field}:") if field else error["message"], error

        spec = await http.get("/openapi.json")
        docs = await http.get("/docs")
        # The docs page loads its script and style from the reporter itself (no CDN: it
        # works on a network without internet access).
        assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
        fetched = [await http.get(a) for a in assets]
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
    paths = spec.json()["paths"]
    for path in ("/tasks", "/tasks/{task_id}", "/estimate", "/quota", "/dashboard/stats"):
        assert path in paths
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    assert assets and all(a.startswith("/") for a in assets), assets
    assert all(r.status_code == 200 and r.content for r in fetched), [
        (a, r.status_code) for a, r in zip(assets, fetched, strict=True)
    ]


async def test_a_program_creates_a_task_reads_it_and_moves_it(
    harness: Harness, chain: httpx.AsyncClient, workspace: str
) -> None:
    http, h = chain, harness
    async with h.client.watch(TaskCreated, lambda e: e.workspace == workspace) as published:
        created = await http.post(
            "/tasks",
            params={"wait": 20},
            json={
                "title": "Add OAuth login",
                "description": "- callback\n- refresh",
                "priority": "P1",
                "labels": ["backend"],
                "workspace": workspace,
            },
        )
        event = await h.next_item(published, what="task.created from the API")
    assert created.status_code == 201, created.text
    body = created.json()
    task_id = body["task_id"]
    assert created.headers["location"] == body["status_url"] == f"/tasks/{task_id}"
    assert body["settled"] and body["estimate"]["story_points"] >= 1
    assignment = body["assignment"]
    assert assignment["model"] and assignment["reserved_tokens"] > 0
    assert isinstance(assignment["reserved_micros"], int)
    # The same event the CLI publishes, from the API.
    assert (event.task_id, event.source, len(event.labels)) == (task_id, "api", 1)

    async def recorded() -> dict[str, Any] | None:
        view = (await http.get(f"/tasks/{task_id}")).json()
        return view if view["status"] and view["assignments"] else None

    view = await h.eventually(recorded, what="the task in the tracker's and assigner's tables")
    assert view["title"] == "Add OAuth login" and view["status"] == "backlog"
    assert view["estimate"]["story_points"] == body["estimate"]["story_points"]
    assert view["assignments"][0]["assignment_id"] == assignment["assignment_id"]
    assert view["assigner"]["status"] == "assigned" and view["attempts"] == 1

    async with h.client.watch(TaskStatusChanged, lambda e: e.task_id == task_id) as moved:
        resp = await http.post(f"/tasks/{task_id}/status", json={"to_status": "in_progress"})
        change = await h.next_item(moved, what="task.status_changed from the API")
    assert resp.status_code == 202, resp.text
    assert (change.from_status, change.to_status, change.workspace) == (
        "backlog",
        "in_progress",
        workspace,
    )

    async def moved_in_tracker() -> dict[str, Any] | None:
        view = (await http.get(f"/tasks/{task_id}")).json()
        return view if view["status"] == "in_progress" else None

    view = await h.eventually(moved_in_tracker, what="the tracker to record the move")
    assert [(s["from_status"], s["to_status"]) for s in view["status_history"]] == [
        ("backlog", "in_progress")
    ]
    lanes = (await http.get("/lanes", params={"workspace": workspace})).json()
    assert lanes["lanes"]["work"]["wip"] == 1

    stats = (await http.get("/dashboard/stats", params={"workspace": workspace})).json()
    assert (stats["tasks_created"], stats["tasks_assigned"]) == (1, 1)
    assert stats["spend_micros"] == 0 and stats["spend_usd"] == "0.0000"


async def test_without_waiting_the_answer_is_202_with_a_link_to_poll(
    chain: httpx.AsyncClient, workspace: str
) -> None:
    # Any id a client chooses comes back as a usable link (it was a 500 before).
    task_id = f"tâche-{new_id()[:6]}"
    resp = await chain.post(
        "/tasks",
        params={"wait": 0},
        json={"title": "Later", "workspace": workspace, "task_id": task_id},
    )
    assert resp.status_code == 202, resp.text
    body = resp.json()
    assert body["settled"] is False and body["task_id"] == task_id
    assert body["status_url"] == resp.headers["location"] == f"/tasks/{quote(task_id)}"

    async def readable() -> dict[str, Any] | None:
        found = await chain.get(body["status_url"])
        return found.json() if found.status_code == 200 else None

    view = await eventually(readable, what="the task the API created")
    assert view["task_id"] == task_id
    # A retry (same task id) creates nothing new, as the CLI's --id does.
    again = await chain.post(
        "/tasks",
        params={"wait": 0},
        json={"title": "Later", "workspace": workspace, "task_id": task_id},
    )
    assert again.status_code == 202 and again.json()["duplicate"] is True


async def test_a_task_id_with_a_slash_is_read_and_moved_through_its_link(
    chain: httpx.AsyncClient, workspace: str
) -> None:
    # Ids like "team/A-12" are valid on the bus; the API's link to them must work too.
    task_id = f"team/A-{new_id()[:6]}"
    resp = await chain.post(
        "/tasks",
        params={"wait": 0},
        json={"title": "Slash", "workspace": workspace, "task_id": task_id},
    )
    assert resp.status_code == 202, resp.text
    link = resp.json()["status_url"]
    assert link == f"/tasks/{quote(task_id, safe='')}"

    async def readable() -> dict[str, Any] | None:
        found = await chain.get(link)
        return found.json() if found.status_code == 200 else None

    view = await eventually(readable, what="the task with a slash in its id")
    assert view["task_id"] == task_id
    moved = await chain.post(f"{link}/status", json={"to_status": "in_progress"})
    assert moved.status_code == 202, moved.text

    async def in_progress() -> dict[str, Any] | None:
        found = (await chain.get(link)).json()
        return found if found["status"] == "in_progress" else None

    await eventually(in_progress, what="the move of the task with a slash in its id")


async def test_estimate_only_creates_nothing(chain: httpx.AsyncClient, workspace: str) -> None:
    resp = await chain.post(
        "/estimate", json={"title": "Fix login redirect", "priority": "P2", "workspace": workspace}
    )
    assert resp.status_code == 200, resp.text
    estimate = resp.json()
    assert estimate["story_points"] >= 1 and estimate["task_id"] is None
    stats = (await chain.get("/dashboard/stats", params={"workspace": workspace})).json()
    assert stats["tasks_created"] == 0


async def test_quota_is_read_and_frozen_over_http(chain: httpx.AsyncClient) -> None:
    usage = await chain.get("/quota")
    assert usage.status_code == 200, usage.text
    subs = {s["subscription"]: s for s in usage.json()["subscriptions"]}
    name = next(iter(subs))
    day = subs[name]["day"]
    assert isinstance(day["used_micros"], int) and day["used_usd"].count(".") == 1

    frozen = await chain.post(f"/quota/{name}/freeze")
    assert frozen.json() == {"subscription": name, "frozen": True}
    now = {s["subscription"]: s for s in (await chain.get("/quota")).json()["subscriptions"]}
    assert now[name]["frozen"] is True
    thawed = await chain.post(f"/quota/{name}/unfreeze")
    assert thawed.json() == {"subscription": name, "frozen": False}

    unknown = await chain.post("/quota/no-such-sub/freeze")
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "subscription"


async def test_model_performance_and_experiments_read_their_owners_tables(
    harness: Harness, workspace: str
) -> None:
    stats = {
        "model": "gpt-5",
        "task_type": "feature",
        "band": "medium",
        "runs": 4,
        "successes": 3,
        "delivered_points": 15.0,
        "total_cost_usd": 0.1755,
        "total_tokens": 40_000,
        "total_hours": 6.0,
        "velocity": {"count": 3, "mean": 2.5, "m2": 0.5, "min": 2.0, "max": 3.0},
        "quality": {"count": 4, "mean": 0.8, "m2": 0.0, "min": 0.8, "max": 0.8},
    }
    await harness.execute(
        insert(model_scores),
        {"workspace": workspace, "model": "gpt-5", "task_type": "feature", "band": "medium",
         "samples": 4, "stats": stats},
    )  # fmt: skip
    name = f"exp-{new_id()[:8]}"
    await harness.execute(
        insert(experiments),
        {"namespace": harness.settings.namespace, "name": name, "task_type": None,
         "variants": [{"name": "A", "strategy": "learned", "weight": 1.0},
                      {"name": "B", "strategy": "cheapest_capable", "weight": 1.0}]},
    )  # fmt: skip
    await harness.start("learner")
    reporter = await harness.start("reporter")
    async with client(reporter) as http:
        models = (await http.get("/models/performance", params={"workspace": workspace})).json()
        listed = (await http.get("/experiments")).json()
        analysis = await http.get(f"/experiments/{name}", params={"workspace": workspace})
        unknown = await http.get("/experiments/no-such-experiment")

    [row] = models["models"]
    assert (row["runs"], row["success_rate"]) == (4, 0.75)
    assert row["velocity"]["mean"] == 2.5 and row["velocity"]["stddev"] == 0.5
    assert (row["cost_micros"], row["cost_usd"]) == (175_500, "0.1755")
    assert row["cost_per_point_micros"] == 11_700
    assert [e["name"] for e in listed["experiments"]] == [name]
    assert [v["strategy"] for v in listed["experiments"][0]["variants"]] == [
        "learned",
        "cheapest_capable",
    ]
    assert analysis.status_code == 200, analysis.text
    assert analysis.json()["experiment"] == name and analysis.json()["arms"] == {}
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "name"
