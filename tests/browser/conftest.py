"""The console in a real browser: Debian's Chromium driven by Playwright, against the
reporter served over a real port with the services behind it on real NATS, Postgres and
Redis, and data published through the bus (tasks with the client's commands, runs with the
SDK).

Chromium is ``/usr/bin/chromium`` (``TALLY_CHROMIUM`` names another). Without it these
tests are skipped locally, with the reason; under ``CI=true`` they fail. Screenshots of
every page go to ``.tally/screenshots`` (``TALLY_SCREENSHOTS`` names another folder).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright

from tally.client import TallyClient
from tally.commands import create_task, task_created
from tally.db import create_engine
from tally.events import TaskAssigned, new_id
from tally.sandbox import sandbox
from tally.sdk import Tally
from tally.settings import TallySettings
from tests.conftest import IN_CI
from tests.integration.conftest import ADMIN, ADMIN_TOKEN, Harness

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("TALLY_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("TALLY_SCREENSHOTS", ROOT / ".tally" / "screenshots"))
#: What a run's worker call reports: Anthropic's usage shape, with cache read and write.
USAGE = {
    "input_tokens": 1200,
    "output_tokens": 340,
    "cache_read_input_tokens": 5000,
    "cache_creation_input_tokens": 800,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` (already started) on a free loopback port for the block; yields its URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    )
    task = asyncio.create_task(server.serve())
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                try:
                    await http.get("/readyz")
                    break
                except httpx.TransportError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        yield url
    finally:
        server.should_exit = True
        await task


@dataclass
class Published:
    """What the test published: tasks (id -> title) and runs (id -> task id), in order."""

    workspace: str
    plan_id: str
    tasks: dict[str, str] = field(default_factory=dict)
    #: task id -> the assignment it was given
    assigned: dict[str, TaskAssigned] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)


@dataclass
class Console:
    """The running console and what a test needs to drive and feed it."""

    url: str
    browser: Browser
    harness: Harness
    data: Published
    http: httpx.AsyncClient

    async def page(self, *, token: str | None = ADMIN_TOKEN, **context: Any) -> Page:
        """A fresh tab (signed in with ``token`` unless None) that records console errors."""
        ctx = await self.browser.new_context(
            **{"viewport": {"width": 1280, "height": 900}, **context}
        )
        if token is not None:
            await ctx.add_init_script(f"sessionStorage.setItem('tally.token', {token!r})")
        page = await ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type in ("error", "warning"):
                errors.append(f"console {msg.type}: {msg.text} at {msg.location.get('url')}")

        page.on("console", on_console)
        page.errors = errors  # type: ignore[attr-defined]
        return page

    async def shot(self, page: Page, name: str) -> Path:
        """A full-page screenshot to the screenshots folder."""
        path = SCREENSHOTS / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path

    async def run(self, task_id: str, *, fail: bool = False) -> str:
        """Report a run of ``task_id`` through the SDK; its id once the tracker recorded it."""
        return await publish_run(self.harness, self.data, task_id, self.http, fail=fail)


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        reason = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(reason + " (CI=true: a missing browser is a failure)")
        pytest.skip(reason)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return CHROMIUM


async def publish_run(
    h: Harness, data: Published, task_id: str, http: httpx.AsyncClient, *, fail: bool = False
) -> str:
    t = Tally(h.client, data.workspace)
    run_id = f"R-{new_id()[:10]}"
    a = data.assigned[task_id]
    async with t.run(
        task_id,
        model=a.model,
        run_id=run_id,
        agent_id="agent-7",
        assignment_id=a.assignment_id,
        reservation_id=a.reservation.reservation_id,
    ) as run:
        async with run.phase("plan"):
            await run.worker_call(worker="planner", usage=USAGE, latency_ms=900)
        async with run.phase("implement"):
            async with run.subtask("callback"):
                await run.worker_call(worker="coder", usage=USAGE, latency_ms=1500)
            await run.changes(["auth.py", "test_auth.py"], lines_added=120, lines_removed=8)
        await run.verification("pytest -q", passed=not fail, duration_ms=800)
        await run.checkpoint(verified=not fail, commit="c0ffee1")
        await run.milestone("tests green")
        if fail:
            run.finish("error", success=False)
    data.runs[run_id] = task_id

    async def recorded() -> bool:
        got = (await http.get("/runs", params={"task_id": task_id, "limit": 500})).json()
        return any(r["run_id"] == run_id and r["finished_at"] for r in got["runs"])

    await h.eventually(recorded, timeout=20, what=f"run {run_id} recorded")
    return run_id


async def publish(h: Harness, http: httpx.AsyncClient) -> Published:
    """Three tasks of one plan (estimated and assigned) and two runs of the first."""
    data = Published(workspace=f"ws-{new_id()[:8]}", plan_id=f"PLAN-{new_id()[:6]}")
    titles = ("Add OAuth login", "Fix login redirect loop", "Write the billing export")
    for i, title in enumerate(titles):
        event = task_created(
            source="cli",
            workspace=data.workspace,
            task_id=f"T-{new_id()[:8]}",
            title=title,
            description="- callback\n- refresh token" if i == 0 else "",
            priority=("P1", "P2", "P3")[i],
            labels=["backend"] if i < 2 else ["billing"],
            plan_id=data.plan_id,
            team_estimate=(5, 3, 8)[i],
        )
        progress = await create_task(h.client, event, timeout=20)
        assert progress.assigned is not None, f"{title} was not assigned"
        data.tasks[event.task_id] = title
        data.assigned[event.task_id] = progress.assigned
    first = next(iter(data.tasks))
    await publish_run(h, data, first, http, fail=True)
    await publish_run(h, data, first, http)
    return data


@pytest.fixture(scope="module")
async def console(stack: TallySettings) -> AsyncIterator[Console]:
    """Five services and the reporter on a port, data published, Chromium launched."""
    path = _chromium()
    async with sandbox(stack, prefix=f"{stack.namespace}b", database=False) as settings:
        engine = create_engine(settings.database_url)
        try:
            async with TallyClient.connect(
                settings.nats_url, namespace=settings.namespace
            ) as client:
                h = Harness(settings, client, engine)
                try:
                    for service in ("quota", "estimator", "assigner", "tracker", "learner"):
                        await h.start(service)
                    reporter = await h.start("reporter")
                    async with (
                        serving(reporter) as url,
                        httpx.AsyncClient(base_url=url, headers=ADMIN, timeout=30) as http,
                        async_playwright() as pw,
                    ):
                        data = await publish(h, http)
                        browser = await pw.chromium.launch(executable_path=path)
                        try:
                            yield Console(url, browser, h, data, http)
                        finally:
                            await browser.close()
                finally:
                    await h.stop_all()
        finally:
            await engine.dispose()
