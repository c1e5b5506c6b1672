"""The reporter's live page and its event stream, fed by runs the tracker recorded."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from services.reporter.live import LiveHub
from tally.events import new_id
from tests.integration.builders import bare_run
from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from faststream.asgi import AsgiFastStream

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
#: Longest a test waits for a streamed response before it fails.
RESPONSE_TIMEOUT_S = 30.0


def client(app: AsgiFastStream) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers=ADMIN,
        timeout=RESPONSE_TIMEOUT_S,
    )


def parse_sse(body: str) -> list[tuple[str, dict[str, Any]]]:
    """The (event name, JSON data) pairs of an SSE body; comments are skipped."""
    events = []
    for block in body.split("\n\n"):
        fields = [line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")]
        if fields:
            name = next(v for k, v in fields if k == "event")
            data = "\n".join(v for k, v in fields if k == "data")
            events.append((name, json.loads(data)))
    return events


async def connected(h: Harness, reporter: AsgiFastStream) -> LiveHub:
    """The reporter's hub, once a stream has joined it (its NATS subscription is up)."""
    hub: LiveHub = reporter.api.state.live  # type: ignore[attr-defined]

    async def joined() -> bool:
        return hub.clients > 0

    await h.eventually(joined, what="the stream to join the live hub")
    return hub


async def finish(response: asyncio.Task[httpx.Response]) -> httpx.Response:
    """The streamed response, or a failure (and the request cancelled) if it never ends."""
    try:
        return await asyncio.wait_for(response, RESPONSE_TIMEOUT_S)
    except TimeoutError as exc:
        raise AssertionError("the event stream never ended") from exc


async def test_the_stream_relays_recorded_runs(harness: Harness, workspace: str) -> None:
    h = harness
    await h.start("tracker")
    reporter = await h.start("reporter")
    finished, failed = f"run-{new_id()}", f"run-{new_id()}"
    outcomes = {finished: "complete", failed: "error"}

    async with client(reporter) as http:
        response = asyncio.create_task(http.get("/live/events", params={"limit": 2}))
        try:
            await connected(h, reporter)
            for minutes, (run_id, outcome) in enumerate(outcomes.items()):
                started = T0 + timedelta(minutes=minutes)
                for event in bare_run(
                    workspace,
                    f"task-{new_id()}",
                    started=started,
                    finished=started + timedelta(minutes=30),
                    outcome=outcome,
                    model="claude-sonnet-4",
                    run_id=run_id,
                ):
                    await h.client.publish(event)
            done = await finish(response)
        finally:
            response.cancel()

    assert done.status_code == 200
    assert done.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(done.text)
    assert [name for name, _ in events] == ["runs", "runs"]
    got = {data["run_id"]: data for _, data in events}
    assert {run_id: data["outcome"] for run_id, data in got.items()} == outcomes
    assert all(data["workspace"] == workspace for data in got.values())
    assert all(data["model"] == "claude-sonnet-4" for data in got.values())
    assert got[finished]["success"] is True and got[failed]["success"] is False
    assert got[finished]["finished_at"] == (T0 + timedelta(minutes=30)).isoformat()


async def test_stopping_the_reporter_ends_open_streams(harness: Harness) -> None:
    h = harness
    reporter = await h.start("reporter")
    async with client(reporter) as http:
        response = asyncio.create_task(http.get("/live/events"))
        try:
            hub = await connected(h, reporter)
            h.apps.remove(reporter)
            await reporter.stop()
            done = await finish(response)
        finally:
            response.cancel()

    assert done.status_code == 200
    assert parse_sse(done.text) == []
    assert hub.clients == 0


async def test_a_bad_limit_is_refused_and_the_page_points_at_the_stream(
    harness: Harness,
) -> None:
    reporter = await harness.start("reporter")
    async with client(reporter) as http:
        bad = [await http.get("/live/events", params={"limit": v}) for v in ("two", "0", "-1")]
        page = await http.get("/live")

    assert [r.status_code for r in bad] == [400, 400, 400]
    assert all(r.json()["error"]["message"].startswith("limit:") for r in bad)
    assert {r.json()["error"]["field"] for r in bad} == {"limit"}
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'EventSource("/live/events")' in page.text


async def test_a_workspace_token_streams_only_its_own_workspace(
    harness: Harness, workspace: str
) -> None:
    h = harness
    await h.start("tracker")
    reporter = await h.start("reporter")
    other = f"{workspace}-b"
    ours = [f"run-{new_id()}", f"run-{new_id()}"]
    theirs = [f"run-{new_id()}", f"run-{new_id()}"]

    async with client(reporter) as http:
        made = await http.post(
            "/auth/tokens",
            json={"name": "team-a", "workspace": workspace, "scopes": ["reports:read"]},
        )
        assert made.status_code == 201, made.text
        bound = {"Authorization": f"Bearer {made.json()['token']}"}
        elsewhere = await http.get(
            "/live/events", params={"workspace": other, "limit": 1}, headers=bound
        )
        assert elsewhere.status_code == 404
        assert elsewhere.json()["error"]["field"] == "workspace"
        response = asyncio.create_task(http.get("/live/events", params={"limit": 2}, headers=bound))
        try:
            await connected(h, reporter)
            # Theirs before each of ours: a leak would be the first event the stream sends.
            for minutes, (mine, not_mine) in enumerate(zip(ours, theirs, strict=True)):
                started = T0 + timedelta(minutes=minutes)
                for ws, run_id in ((other, not_mine), (workspace, mine)):
                    for event in bare_run(
                        ws,
                        f"task-{new_id()}",
                        started=started,
                        finished=started + timedelta(minutes=5),
                        run_id=run_id,
                    ):
                        await h.client.publish(event)
            done = await finish(response)
        finally:
            response.cancel()

    assert done.status_code == 200
    events = parse_sse(done.text)
    assert sorted(data["run_id"] for _, data in events) == sorted(ours)
    assert {data["workspace"] for _, data in events} == {workspace}
