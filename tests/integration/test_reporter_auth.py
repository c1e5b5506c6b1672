"""Who may call the reporter's API, and what a workspace's token can see.

Every operation of the OpenAPI document is tried (so a new endpoint is covered the day it
is added): without a token it is 401, with a token lacking its scope 403, and with a token
of workspace A against workspace B's data it answers nothing of B (404, 403 or empty).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from tally.cli.main import app as cli
from tally.db.tables import api_tokens, model_scores, runs, tasks
from tally.events import TaskCreated, TaskStatusChanged, new_id, utcnow
from tests.integration.builders import bare_run
from tests.integration.conftest import ADMIN, eventually
from tests.integration.test_reporter_contract import serving

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Every scope but ``admin``: a workspace's full user.
USER_SCOPES = [
    "tasks:write",
    "runs:read",
    "reports:read",
    "export",
    "quota:admin",
    "experiments:admin",
    "learning:admin",
]


def client(app: AsgiFastStream, token: str | None = None) -> httpx.AsyncClient:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t", headers=headers, timeout=30
    )


async def make_token(
    http: httpx.AsyncClient, workspace: str, scopes: list[str], **more: Any
) -> dict[str, Any]:
    made = await http.post(
        "/auth/tokens",
        json={"name": f"t-{workspace}", "workspace": workspace, "scopes": scopes, **more},
        headers=ADMIN,
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


@pytest.fixture
async def reporter(harness: Harness) -> AsyncIterator[AsgiFastStream]:
    await harness.start("tracker")
    await harness.start("learner")  # answers /experiments/{name}
    yield await harness.start("reporter", api_max_wait_s=1.0)


async def seed_workspace(harness: Harness, workspace: str) -> dict[str, str]:
    """A task (in a plan), its lane move, a finished run and a model score of ``workspace``."""
    ids = {"task_id": f"T-{new_id()}", "plan_id": f"P-{new_id()}"}
    await harness.client.publish(
        TaskCreated(
            workspace=workspace, task_id=ids["task_id"], title="secret", plan_id=ids["plan_id"]
        )
    )
    await harness.client.publish(
        TaskStatusChanged(
            workspace=workspace,
            task_id=ids["task_id"],
            to_status="in_progress",
            changed_at=utcnow(),
        )
    )
    now = utcnow()
    started, finished = bare_run(
        workspace, ids["task_id"], started=now - timedelta(minutes=5), finished=now
    )
    ids["run_id"] = started.run_id
    await harness.client.publish(started)
    await harness.client.publish(finished)
    await harness.execute(
        insert(model_scores),
        [
            {
                "workspace": workspace,
                "model": "m-secret",
                "task_type": "feature",
                "band": "medium",
                "samples": 3,
                "stats": {},
            }
        ],
    )

    async def recorded() -> bool:
        found = await harness.scalar(select(runs.c.outcome).where(runs.c.run_id == ids["run_id"]))
        task = await harness.scalar(
            select(tasks.c.task_id).where(tasks.c.task_id == ids["task_id"])
        )
        return bool(found and task)

    await eventually(recorded, what=f"{workspace}'s run and task recorded")
    return ids


def requests_for(
    spec: dict[str, Any], b: dict[str, str]
) -> list[tuple[str, str, dict[str, Any], Any]]:
    """One request per operation, aimed at workspace B: (method, url, query, json body)."""
    path_values = {
        "run_id": b["run_id"],
        "task_id": b["task_id"],
        "plan_id": b["plan_id"],
        "kind": "tasks",
        "name": "exp",
        "subscription": "sub",
        "action": "freeze",
        "token_id": b["token_id"],
        "job_id": "job-of-b",
    }
    bodies: dict[tuple[str, str], Any] = {
        ("post", "/tasks"): {"title": "x", "workspace": b["workspace"], "task_id": b["task_id"]},
        ("post", "/estimate"): {"title": "x", "workspace": b["workspace"]},
        ("post", "/tasks/{task_id}/status"): {"to_status": "ready_to_review"},
        ("post", "/auth/tokens"): {
            "name": "x",
            "workspace": b["workspace"],
            "scopes": ["runs:read"],
        },
        ("post", "/learning/jobs"): {"workspace": b["workspace"], "config": {}},
        ("post", "/learning/jobs/{job_id}/promote"): {"note": "x"},
    }
    out = []
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            url = path
            for param in operation.get("parameters", []):
                if param["in"] == "path":
                    url = url.replace("{" + param["name"] + "}", path_values[param["name"]])
            names = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            query: dict[str, Any] = {"workspace": b["workspace"]} if "workspace" in names else {}
            if path == "/compare":
                query = {"a": b["run_id"], "b": b["run_id"]}
            if "requestBody" in operation:
                assert (method, path) in bodies, f"add a request body for {method} {path}"
            out.append((method.upper(), url, query, bodies.get((method, path))))
    return out


async def test_every_endpoint_needs_a_token_its_scope_and_hides_other_workspaces(
    harness: Harness, reporter: AsgiFastStream, workspace: str
) -> None:
    a, b = f"{workspace}-a", f"{workspace}-b"
    b_ids = await seed_workspace(harness, b)
    async with client(reporter) as http:
        spec = (await http.get("/openapi.json")).json()
        token_a = (await make_token(http, a, [*USER_SCOPES, "admin"]))["token"]
        no_scope = (await make_token(http, a, ["experiments:admin"]))["token"]
        b_ids["token_id"] = (await make_token(http, b, ["runs:read"]))["token_id"]
    b_ids["workspace"] = b
    secrets = [b, b_ids["task_id"], b_ids["run_id"], b_ids["plan_id"], "m-secret"]

    calls = requests_for(spec, b_ids)
    assert len(calls) == sum(len(m) for m in spec["paths"].values())
    leaks, wrong = [], []
    anon, weak, as_a = client(reporter), client(reporter, no_scope), client(reporter, token_a)
    async with anon, weak, as_a:
        for method, url, query, body in calls:
            got = await anon.request(method, url, params=query, json=body)
            if got.status_code != 401 or got.json()["error"]["code"] != "unauthorized":
                wrong.append(f"{method} {url} without a token: {got.status_code}")
            got = await weak.request(method, url, params=query, json=body)
            if got.status_code != 403 or got.json()["error"]["code"] != "forbidden":
                wrong.append(f"{method} {url} without the scope: {got.status_code}")
            for params in (query, {k: v for k, v in query.items() if k != "workspace"}):
                if url == "/live/events" and "workspace" not in params:
                    # An endless stream of A's own events: test_reporter_live checks that
                    # it never carries B's.
                    continue
                got = await as_a.request(method, url, params=params, json=body)
                if got.status_code in (403, 404):
                    continue
                if got.status_code >= 300 or any(s in got.text for s in secrets):
                    leaks.append(f"{method} {url} {params}: {got.status_code} {got.text[:300]}")
    assert not wrong, "\n".join(wrong)
    assert not leaks, "workspace A saw workspace B:\n" + "\n".join(leaks)
    # Counts carry no ids: A (which has no data) counts none of B's.
    async with client(reporter, token_a) as as_a:
        stats = (await as_a.get("/dashboard/stats")).json()
        assert (stats["workspace"], stats["tasks_created"], stats["runs_finished"]) == (a, 0, 0)
        lanes = (await as_a.get("/lanes")).json()["lanes"]
        assert all(lane["wip"] == 0 and lane["count"] == 0 for lane in lanes.values())

    # B's task was not moved, B's token not revoked, no task was created in B by A.
    async with client(reporter) as http:
        view = (await http.get(f"/tasks/{b_ids['task_id']}", headers=ADMIN)).json()
        assert [s["to_status"] for s in view["status_history"]] == ["in_progress"]
        listed = (await http.get("/auth/tokens", headers=ADMIN)).json()["tokens"]
        assert next(t for t in listed if t["token_id"] == b_ids["token_id"])["revoked_at"] is None


async def test_the_owner_still_sees_its_workspace_and_the_operator_every_one(
    harness: Harness, reporter: AsgiFastStream, workspace: str
) -> None:
    ids = await seed_workspace(harness, workspace)
    async with client(reporter) as http:
        own = (await make_token(http, workspace, ["runs:read", "export"]))["token"]
    async with client(reporter, own) as mine, client(reporter, ADMIN["Authorization"][7:]) as op:
        assert (await mine.get(f"/runs/{ids['run_id']}")).status_code == 200
        assert (await mine.get(f"/tasks/{ids['task_id']}")).json()["workspace"] == workspace
        rows = (await mine.get("/export/tasks")).json()["rows"]
        assert [r["task_id"] for r in rows] == [ids["task_id"]]
        # The operator names a workspace, or sees them all.
        named = (await op.get("/export/tasks", params={"workspace": workspace})).json()["rows"]
        assert [r["task_id"] for r in named] == [ids["task_id"]]


async def test_a_token_is_stored_hashed_used_listed_and_revoked(
    harness: Harness, reporter: AsgiFastStream, workspace: str
) -> None:
    async with client(reporter) as http:
        made = await make_token(http, workspace, ["runs:read"])
        token, token_id = made["token"], made["token_id"]
        stored = await harness.scalar(
            select(api_tokens.c.token_hash).where(api_tokens.c.token_id == token_id)
        )
        assert stored and token not in stored and len(stored) == 64
        assert made["expires_at"] is not None and made["last_used_at"] is None
        used = await http.get(f"/tasks/T-{new_id()}", headers={"Authorization": f"Bearer {token}"})
        assert used.status_code == 404
        listed = (await http.get("/auth/tokens", headers=ADMIN)).json()["tokens"]
        mine = next(t for t in listed if t["token_id"] == token_id)
        assert mine["last_used_at"] is not None and "token" not in mine
        assert (await http.delete(f"/auth/tokens/{token_id}", headers=ADMIN)).status_code == 200
        gone = await http.get("/tasks/x", headers={"Authorization": f"Bearer {token}"})
        assert gone.status_code == 401 and gone.headers["www-authenticate"] == "Bearer"
        # An expired token is refused like a revoked one.
        old = await make_token(http, workspace, ["runs:read"])
        await harness.execute(
            update(api_tokens)
            .where(api_tokens.c.token_id == old["token_id"])
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
        late = await http.get("/tasks/x", headers={"Authorization": f"Bearer {old['token']}"})
        assert late.status_code == 401 and "expired" in late.json()["error"]["message"]
        # A workspace's admin cannot mint tokens for another workspace or an operator's.
        admin_a = (await make_token(http, workspace, ["admin"]))["token"]
        for target in ("other", "*"):
            refused = await http.post(
                "/auth/tokens",
                json={"name": "x", "workspace": target, "scopes": ["admin"]},
                headers={"Authorization": f"Bearer {admin_a}"},
            )
            assert refused.status_code == 403 and refused.json()["error"]["field"] == "workspace"


async def test_rate_limit_and_body_size_are_enforced(harness: Harness, workspace: str) -> None:
    app = await harness.start(
        "reporter", rate_limit_per_s=0.001, rate_limit_burst=3, max_body_bytes=2000
    )
    async with client(app) as http:
        token = (await make_token(http, workspace, ["runs:read", "tasks:write"]))["token"]
    async with client(app, token) as http:
        answers = [(await http.get(f"/tasks/T-{new_id()}")).status_code for _ in range(4)]
        assert answers == [404, 404, 404, 429]
        limited = await http.get("/tasks/x")
        assert limited.json()["error"]["code"] == "rate_limited"
    async with client(app, ADMIN["Authorization"][7:]) as http:
        big = await http.post("/tasks", json={"title": "x" * 5000})
        assert big.status_code == 413 and big.json()["error"]["field"] == "body"
        # The OTLP receiver keeps its own (larger) limit and its own answer shape.
        otlp = await http.post(
            "/v1/traces",
            content=b"{" + b" " * 5000 + b"}",
            headers={"content-type": "application/json"},
        )
        assert otlp.status_code == 200


async def test_metrics_can_require_a_token(harness: Harness) -> None:
    app = await harness.start("reporter", metrics_token_required=True)
    async with client(app) as http:
        assert (await http.get("/metrics")).status_code == 401
        assert (await http.get("/metrics", headers=ADMIN)).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_tally_token_creates_lists_and_revokes_with_an_admin_token(
    harness: Harness, workspace: str
) -> None:
    app = await harness.start("reporter")
    runner = CliRunner()

    def tally(*args: str, token: str | None) -> Any:
        env = {"TALLY_REPORTER_URL": base_url, "TALLY_API_TOKEN": token or ""}
        return runner.invoke(cli, list(args), env=env)

    async with serving(app) as base_url:
        anonymous = await asyncio.to_thread(tally, "token", "list", token=None)
        assert anonymous.exit_code == 1 and "TALLY_API_TOKEN" in anonymous.output
        admin = ADMIN["Authorization"][7:]
        made = await asyncio.to_thread(
            tally, "token", "create", "--name", "ci", "--workspace", workspace,
            "--scope", "runs:read", "--json", token=admin,
        )  # fmt: skip
        assert made.exit_code == 0, made.output
        created = json.loads(made.output)
        listed = await asyncio.to_thread(tally, "token", "list", "--json", token=admin)
        rows = {t["token_id"]: t for t in json.loads(listed.output)}
        assert rows[created["token_id"]]["scopes"] == ["runs:read"]
        assert created["token"] not in listed.output
        # The new token is not an admin: it cannot list tokens.
        weak = await asyncio.to_thread(tally, "token", "list", token=created["token"])
        assert weak.exit_code == 1 and "admin" in weak.output
        gone = await asyncio.to_thread(
            tally, "token", "revoke", created["token_id"], "--json", token=admin
        )
        assert json.loads(gone.output)["revoked_at"] is not None
