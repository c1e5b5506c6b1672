"""The six services running in their own process, driven through the bus like a user would."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import tally
from tally.cli.ops import SERVICES
from tally.client import TallyClient
from tally.db import create_engine
from tally.db.tables import model_scores, quota_ledger, run_events, runs, token_usage
from tally.events import DeadLetter, UsageReply, UsageRequest
from tally.settings import TallySettings
from tally.subjects import Catalog

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


#: The reporter's bootstrap token in this test (an operator's admin token, never stored).
BOOTSTRAP = "tly_e2e-bootstrap-" + os.urandom(8).hex()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, what: str = "condition"
) -> T:
    """Poll ``check`` until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


class Tally:
    """The running services plus what a test needs to talk to them."""

    def __init__(self, settings: TallySettings, env: dict[str, str], ports: dict[str, int]):
        self.settings = settings
        self.env = env
        self.ports = ports
        self.engine: AsyncEngine = create_engine(settings.database_url)

    @property
    def reporter_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['reporter']}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tally.cli.main", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=check,
        )

    async def scalar(self, stmt: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(stmt)


@pytest.fixture(scope="module")
async def running(
    stack: TallySettings, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Tally]:
    ports = {name: _free_port() for name in SERVICES}
    env = {
        **os.environ,
        "TALLY_NATS_URL": stack.nats_url,
        "TALLY_DATABASE_URL": stack.database_url,
        "TALLY_REDIS_URL": stack.redis_url,
        "TALLY_NAMESPACE": stack.namespace,
        "TALLY_REPORTER_URL": f"http://127.0.0.1:{ports['reporter']}",
        "TALLY_LOG_LEVEL": "WARNING",
        "TALLY_REPORTER_BOOTSTRAP_TOKEN": BOOTSTRAP,
        **{f"TALLY_{name.upper()}_HTTP_PORT": str(port) for name, port in ports.items()},
    }
    log = open(tmp_path_factory.mktemp("e2e") / "tally-up.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "tally.cli.main", "up", "--no-migrate"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    t = Tally(stack, env, ports)
    try:
        async with httpx.AsyncClient() as http:
            for name, port in ports.items():

                async def healthy(port: int = port) -> bool:
                    if proc.poll() is not None:
                        raise AssertionError(f"tally up exited with {proc.returncode}")
                    try:
                        return (
                            await http.get(f"http://127.0.0.1:{port}/healthz")
                        ).status_code == 200
                    except httpx.HTTPError:
                        return False

                await eventually(healthy, timeout=30, what=f"{name} /healthz")
        # The first admin token, made as docs/security.md says: with the bootstrap token.
        t.env["TALLY_API_TOKEN"] = BOOTSTRAP
        made = t.cli("token", "create", "--name", "e2e", "--workspace", "*", "--scope", "admin")
        t.env["TALLY_API_TOKEN"] = made.stdout.strip().splitlines()[-1]
        yield t
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        await t.engine.dispose()


async def test_task_to_report(running: Tally) -> None:
    s = running.settings
    # 1. A user creates a task: the estimate and the assignment come back.
    out = running.cli(
        "task",
        "create",
        "Add OAuth login",
        "--description",
        "- callback endpoint\n- token refresh\n- login button",
        "--priority",
        "P1",
        "--label",
        "backend",
        "--workspace",
        "e2e",
        "--json",
    )
    created = json.loads(out.stdout)
    estimate, assignment = created["estimate"], created["assignment"]
    assert estimate["story_points"] in (1, 2, 3, 5, 8, 13, 21)
    assert 0 < estimate["hours_p50"] <= estimate["hours_p90"]
    assert len(estimate["subtasks"]) == 3
    # The same shape as the reporter's API: money exact in micro-dollars, and a display text.
    assert assignment["model"] and assignment["reserved_tokens"] > 0
    assert isinstance(assignment["reserved_micros"], int) and "reserved_usd" in assignment
    reservation_id = assignment["reservation_id"]

    # 2. The agent runs it through the SDK, reporting a real Anthropic usage payload.
    async with (
        tally.connect(s.nats_url, workspace="e2e", namespace=s.namespace) as t,
        t.run(
            created["task_id"],
            model=assignment["model"],
            provider=assignment["provider"],
            reservation_id=reservation_id,
        ) as run,
    ):
        async with run.phase("implement"), run.subtask("callback endpoint") as sub:
            await run.worker_call(
                worker="coder",
                model=assignment["model"],
                usage={
                    "input_tokens": 1000,
                    "cache_read_input_tokens": 3000,
                    "cache_creation_input_tokens": 500,
                    "output_tokens": 700,
                },
            )
            sub["quality"] = 0.8
        await run.verification("pytest -q", passed=True)
    run_id = run.run_id
    actual_tokens = 1000 + 3000 + 500 + 700

    # 3. The tracker recorded it all, once.
    assert (
        await eventually(
            lambda: running.scalar(select(runs.c.outcome).where(runs.c.run_id == run_id)),
            what="the run's outcome in Postgres",
        )
        == "complete"
    )
    assert (
        await running.scalar(
            select(func.count()).select_from(run_events).where(run_events.c.run_id == run_id)
        )
        == 6
    )
    assert (
        await running.scalar(
            select(token_usage.c.cache_read_tokens).where(token_usage.c.run_id == run_id)
        )
        == 3000
    )

    # 4. Quota settled the reservation at the actual usage.
    settled = await eventually(
        lambda: running.scalar(
            select(quota_ledger.c.tokens).where(
                quota_ledger.c.reservation_id == reservation_id,
                quota_ledger.c.op == "settle",
            )
        ),
        what="the settle row in the quota ledger",
    )
    assert settled == actual_tokens
    async with TallyClient.connect(s.nats_url, namespace=s.namespace) as client:
        usage = await client.request(UsageRequest(), UsageReply, step="quota")
    sub_usage = next(
        u for u in usage.subscriptions if u["subscription"] == assignment["subscription"]
    )
    assert sub_usage["day"]["used_tokens"] >= actual_tokens
    assert sub_usage["day"]["reserved_tokens"] == 0

    # 5. The learner scored the model.
    assert (
        await eventually(
            lambda: running.scalar(
                select(model_scores.c.samples).where(
                    model_scores.c.workspace == "e2e", model_scores.c.model == assignment["model"]
                )
            ),
            what="the model's score row",
        )
        == 1
    )

    # 6. The reporter summarises the run, and so does `tally report`.
    async with httpx.AsyncClient() as http:
        body = (
            await http.get(
                f"{running.reporter_url}/runs/{run_id}/kpi",
                headers={"Authorization": f"Bearer {running.env['TALLY_API_TOKEN']}"},
            )
        ).json()
    assert len(body["summary"]) == 10
    assert body["kpi"]["worker_calls"] == 1
    report = running.cli("report", run_id)
    assert "Total time" in report.stdout and "Verification: 1 check, 1 passed" in report.stdout

    # 7. Token and timeline reports read the same record.
    tokens = json.loads(
        running.cli("tokens", "--by", "task", "--workspace", "e2e", "--json").stdout
    )
    row = next(r for r in tokens["rows"] if r["key"] == created["task_id"])
    assert (row["input_tokens"], row["cache_read_tokens"], row["cache_write_tokens"]) == (
        1000,
        3000,
        500,
    )
    shown = json.loads(running.cli("run", "show", run_id, "--json").stdout)
    kinds = [e["kind"] for e in shown["timeline"]]
    assert kinds == [
        "phase_start",
        "subtask_started",
        "worker_call",
        "subtask_completed",
        "phase_end",
        "verification",
    ]
    assert "worker_call" in running.cli("run", "show", run_id).stdout

    # 8. The export hands out the same rows, the task's token use among them.
    task_only = ("--workspace", "e2e", "--task", created["task_id"])
    exported = json.loads(running.cli("export", "runs", *task_only).stdout)
    assert [r["run_id"] for r in exported] == [run_id]
    calls = running.cli("export", "token_usage", "--format", "jsonl", *task_only)
    usage_rows = [json.loads(line) for line in calls.stdout.splitlines()]
    assert [(r["task_id"], r["cache_read_tokens"]) for r in usage_rows] == [
        (created["task_id"], 3000)
    ]


async def test_replay_is_idempotent(running: Tally) -> None:
    example = str(ROOT / "docs" / "examples" / "run.jsonl")
    first = json.loads(running.cli("run", "replay", example, "--json").stdout)
    second = json.loads(running.cli("run", "replay", example, "--json").stdout)
    assert first["published"] + first["duplicates"] == 16
    assert second == {"published": 0, "duplicates": 16, "run_ids": ["run-example-001"]}

    count = (
        select(func.count()).select_from(run_events).where(run_events.c.run_id == "run-example-001")
    )
    await eventually(
        lambda: running.scalar(
            select(runs.c.finished_at).where(runs.c.run_id == "run-example-001")
        ),
        what="the example run to finish",
    )
    assert await running.scalar(count) == 14
    report = running.cli("report", "run-example-001")
    assert report.stdout.count("\n") == 11  # heading + 10 KPI lines
    assert "Changes: 3 files, +184/-12 lines" in report.stdout


async def test_malformed_task_goes_to_dead_letter(running: Tally) -> None:
    s = running.settings
    catalog = Catalog(s.namespace)
    async with TallyClient.connect(s.nats_url, namespace=s.namespace) as client:
        letters: asyncio.Queue[DeadLetter] = asyncio.Queue()

        async def on_letter(msg: Any) -> None:
            letters.put_nowait(DeadLetter.model_validate_json(msg.data))

        sub = await client.nc.subscribe(catalog.dlq("estimator"), cb=on_letter)
        await client.js.publish(
            catalog.subject("task.created"),
            b'{"task_id": "bad-1", "title": "", "priority": "P9"}',
            headers={"Nats-Msg-Id": "bad-1"},
        )
        letter = await asyncio.wait_for(letters.get(), 15)
        await sub.unsubscribe()
    assert letter.subject == "task.created"
    assert "title" in letter.error and "priority" in letter.error
    assert json.loads(letter.payload)["task_id"] == "bad-1"
    shown = json.loads(running.cli("dlq", "--service", "estimator", "--json").stdout)
    assert any(json.loads(d["payload"]).get("task_id") == "bad-1" for d in shown)
    # The estimator keeps going: the next good task is estimated and assigned.
    out = running.cli(
        "task",
        "create",
        "Fix typo in README",
        "--priority",
        "P4",
        "--label",
        "docs",
        "--workspace",
        "e2e",
        "--json",
    )
    assert json.loads(out.stdout)["estimate"]["story_points"] >= 1
