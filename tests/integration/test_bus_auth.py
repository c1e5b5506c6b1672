"""The bus with authentication on: a private NATS started with the shipped configuration.

The server (on a free port, JetStream in a temporary directory) runs the configuration
``tally nats config`` generates (``deploy/nats/nats-server.conf`` is its copy with no
namespace; here it is generated for the test's own namespace). An agent's credential
cannot forge ``run.recorded``, freeze a subscription, read another user's replies or touch
the streams; the tracker and the quota service, each with its own credential, record and
settle a run as usual.
"""

from __future__ import annotations

import importlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import structlog.testing
import yaml
from nats.aio.client import Client as NATS
from nats.js.errors import NotFoundError
from sqlalchemy.engine import make_url

from services.quota.app import create_app as quota_app
from services.quota.settings import QuotaSettings
from services.tracker.app import create_app as tracker_app
from services.tracker.settings import TrackerSettings
from tally.cli.security import new_password
from tally.client import TallyClient
from tally.errors import TransientError
from tally.events import (
    QuotaSettled,
    ReserveReply,
    ReserveRequest,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskCreated,
    TokenTotals,
    new_id,
    utcnow,
)
from tally.events.assign import FreezeRequest
from tally.events.learning import LearnerReport, LearnerReportRequest
from tally.logging import render
from tally.natsconfig import ROLES, password_variable, server_config
from tally.settings import TallySettings, nats_options
from tally.subjects import Catalog
from tests.integration.conftest import SERVICES, eventually, next_item

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server binary"),
]

TEAM = "team"


@dataclass
class SecureBus:
    url: str
    namespace: str
    passwords: dict[str, str]
    log: Path

    def violations(self) -> list[str]:
        """The server's log lines about refused publications and subscriptions."""
        return [line for line in self.log.read_text().splitlines() if "Violation" in line]

    def options(self, role: str) -> dict[str, Any]:
        return nats_options(role, self.passwords[role])

    async def connect(self, role: str, errors: list[str]) -> NATS:
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        return await nats.connect(self.url, error_cb=on_error, **self.options(role))

    def client(self, role: str) -> Any:
        return TallyClient.connect(self.url, namespace=self.namespace, options=self.options(role))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.fixture
async def secure_bus(tmp_path: Path) -> AsyncIterator[SecureBus]:
    namespace = f"auth{new_id()[:8]}"
    config = tmp_path / "nats-server.conf"
    config.write_text(server_config(namespace))
    passwords = {role: new_password() for role in ROLES}
    env = {**os.environ, **{password_variable(r): p for r, p in passwords.items()}}
    port = _free_port()
    log = tmp_path / "nats-server.log"
    server = subprocess.Popen(
        [
            *("nats-server", "-c", str(config), "-a", "127.0.0.1", "-p", str(port)),
            *("-sd", str(tmp_path / "js")),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("wb"),
    )
    try:

        async def up() -> bool:
            assert server.poll() is None, "nats-server exited: see its configuration"
            return _listening(port)

        await eventually(up, timeout=10, what="the private nats-server to listen")
        yield SecureBus(f"nats://127.0.0.1:{port}", namespace, passwords, log)
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def subscriptions(tmp_path: Path) -> Path:
    path = tmp_path / "subscriptions.yaml"
    team = {"name": TEAM, "kind": "payg", "enforcement": "hard"}
    path.write_text(
        yaml.safe_dump({"subscriptions": [{**team, "limits": {"day": {"tokens": 10_000}}}]})
    )
    return path


@pytest.fixture
async def services(
    secure_bus: SecureBus, stack: TallySettings, subscriptions: Path
) -> AsyncIterator[None]:
    """The tracker and the quota service, each logged in as itself."""
    common = {
        "nats_url": secure_bus.url,
        "database_url": stack.database_url,
        "redis_url": stack.redis_url,
        "namespace": secure_bus.namespace,
    }
    apps = [
        tracker_app(
            TrackerSettings(
                **common, nats_user="tracker", nats_password=secure_bus.passwords["tracker"]
            )
        ),
        quota_app(
            QuotaSettings(
                **common,
                nats_user="quota",
                nats_password=secure_bus.passwords["quota"],
                subscriptions_path=subscriptions,
            )
        ),
    ]
    for app in apps:
        await app.start()
    try:
        yield
    finally:
        for app in reversed(apps):
            await app.stop()


async def violation(errors: list[str], subject: str) -> str:
    async def seen() -> str | None:
        return next(
            (e for e in errors if "permissions violation" in e and subject.lower() in e), None
        )

    return await eventually(seen, timeout=5, what=f"a violation on {subject} in {errors}")


async def test_a_wrong_or_missing_password_is_refused(secure_bus: SecureBus) -> None:
    for options in ({}, nats_options("agent", "not-the-password")):
        with pytest.raises(TransientError, match=r"(?i)authorization"):
            async with TallyClient.connect(secure_bus.url, options=options):
                pass


async def test_an_agent_cannot_forge_records_freeze_quota_or_read_others(
    secure_bus: SecureBus, services: None, workspace: str
) -> None:
    catalog = Catalog(secure_bus.namespace)
    async with secure_bus.client("assigner") as assigner, secure_bus.client("operator") as operator:
        held = await assigner.request(
            ReserveRequest(
                subscription=TEAM, tokens=500, cost_usd=0.0, reservation_id=f"res-{new_id()}"
            ),
            ReserveReply,
            step="quota",
        )
        assert held.ok

        errors: list[str] = []
        agent = await secure_bus.connect("agent", errors)
        try:
            # The forgery of the report: a run.recorded that would settle 500 tokens.
            now = utcnow()
            forged = RunRecorded(
                run_id=f"run-{new_id()}",
                task_id=f"task-{new_id()}",
                reservation_id=held.reservation_id,
                outcome="complete",
                success=True,
                started_at=now - timedelta(minutes=5),
                finished_at=now,
                actual_hours=5 / 60,
                tokens=TokenTotals(input_tokens=500),
                workspace=workspace,
            )
            await agent.publish(catalog.subject("run.recorded"), forged.to_json())
            await violation(errors, catalog.subject("run.recorded"))
            freeze = FreezeRequest(subscription=TEAM, frozen=True).to_json()
            with pytest.raises((TimeoutError, nats.errors.NoRespondersError)):
                await agent.request(catalog.subject("quota.freeze"), freeze, timeout=1.0)
            await violation(errors, catalog.subject("quota.freeze"))
            # Nor the JetStream API (streams, consumers), nor another user's replies.
            await agent.publish(f"$JS.API.STREAM.DELETE.{catalog.stream('RUNS')}", b"")
            await violation(errors, "$JS.API.STREAM.DELETE")
            await agent.subscribe("_INBOX_quota.>")
            assert "subscription" in await violation(errors, "_INBOX_quota.>")
        finally:
            await agent.close()

        # Nothing forged was stored, and the subscription is not frozen.
        with pytest.raises(NotFoundError):
            await operator.js.get_last_msg(catalog.stream("RUNS"), catalog.subject("run.recorded"))
        again = await assigner.request(
            ReserveRequest(
                subscription=TEAM, tokens=1, cost_usd=0.0, reservation_id=f"res-{new_id()}"
            ),
            ReserveReply,
            step="quota",
        )
        assert again.ok, again.reason

        # The agent's real run, recorded by the tracker, settles the reservation: 0 tokens.
        async with (
            secure_bus.client("agent") as client,
            operator.watch(
                QuotaSettled, lambda s: s.reservation_id == held.reservation_id
            ) as settled_q,
        ):
            run_id, task_id = f"run-{new_id()}", f"task-{new_id()}"
            await client.publish(
                RunStarted(
                    run_id=run_id,
                    task_id=task_id,
                    workspace=workspace,
                    started_at=now,
                    reservation_id=held.reservation_id,
                )
            )
            await client.publish(
                RunFinished(
                    run_id=run_id,
                    task_id=task_id,
                    workspace=workspace,
                    outcome="complete",
                    success=True,
                    finished_at=now + timedelta(minutes=1),
                    event_count=0,
                    reservation_id=held.reservation_id,
                )
            )
            settled = await next_item(settled_q, what="quota.settled")
    assert (settled.status, settled.actual_tokens) == ("settled", 0)
    assert settled.reserved_tokens == 500
    refused = secure_bus.violations()
    # Only the agent was refused, never a service ("$G/user:agent" from nats-server 2.10
    # on, 'User "agent"' before).
    assert refused and all("user:agent" in line or 'User "agent"' in line for line in refused), (
        refused
    )


async def test_no_password_reaches_the_logs_or_healthz(
    secure_bus: SecureBus, stack: TallySettings
) -> None:
    """A service whose NATS password and database URL carry secrets, with a message it
    must dead-letter (logged), never prints them: not in a log line, not in /healthz."""
    secret = secure_bus.passwords["tracker"]
    database_url = (
        make_url(stack.database_url).set(password=secret).render_as_string(hide_password=False)
    )
    settings = TrackerSettings(
        nats_url=secure_bus.url,
        database_url=database_url,  # the test server trusts loopback: any password works
        redis_url=stack.redis_url,
        namespace=secure_bus.namespace,
        nats_user="tracker",
        nats_password=secret,
    )
    with structlog.testing.capture_logs() as logged:
        app = tracker_app(settings)
        await app.start()
        try:
            async with secure_bus.client("agent") as agent:
                await agent.js.publish(
                    Catalog(secure_bus.namespace).subject("run.started"), b"{not json"
                )

            async def dead_lettered() -> bool:
                return any(e["event"] == "dead_lettered" for e in logged)

            await eventually(dead_lettered, what="the invalid message to be dead-lettered")
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://tally"
            ) as http:
                healthz = (await http.get("/healthz")).text
                readyz = (await http.get("/readyz")).text
        finally:
            await app.stop()
        logged.append({"event": "settings", "settings": repr(settings), "url": database_url})
    lines = [render(entry) for entry in logged]
    assert all(secret not in line for line in lines), [x for x in lines if secret in x]
    assert secret not in healthz and secret not in readyz
    assert any("***" in line for line in lines)  # the URL was logged, without its password


async def test_the_six_services_run_with_their_own_credentials(
    secure_bus: SecureBus, stack: TallySettings, workspace: str
) -> None:
    """A task goes from an agent through estimator, assigner and quota to its assignment,
    its run through the tracker to the quota service and the learner, with every process
    logged in as itself; every service stays healthy (no consumer refused)."""
    apps = []
    for name, (app_module, settings_module, settings_cls) in SERVICES.items():
        settings = getattr(importlib.import_module(settings_module), settings_cls)(
            nats_url=secure_bus.url,
            database_url=stack.database_url,
            redis_url=stack.redis_url,
            namespace=secure_bus.namespace,
            nats_user=name,
            nats_password=secure_bus.passwords[name],
        )
        app = importlib.import_module(app_module).create_app(settings)
        await app.start()
        apps.append(app)
    try:
        task_id = f"task-{new_id()}"
        async with secure_bus.client("agent") as agent, secure_bus.client("operator") as operator:
            async with agent.watch(TaskAssigned, lambda a: a.task_id == task_id) as assigned_q:
                await agent.publish(
                    TaskCreated(task_id=task_id, title="Add OAuth login", workspace=workspace)
                )
                assigned = await next_item(assigned_q, what="task.assigned")
            reservation = assigned.reservation.reservation_id
            async with operator.watch(
                QuotaSettled, lambda s: s.reservation_id == reservation
            ) as settled_q:
                run_id, now = f"run-{new_id()}", utcnow()
                await agent.publish(
                    RunStarted(
                        run_id=run_id,
                        task_id=task_id,
                        model=assigned.model,
                        workspace=workspace,
                        started_at=now,
                        reservation_id=reservation,
                    )
                )
                await agent.publish(
                    RunFinished(
                        run_id=run_id,
                        task_id=task_id,
                        workspace=workspace,
                        outcome="complete",
                        success=True,
                        finished_at=now + timedelta(minutes=30),
                        event_count=0,
                        reservation_id=reservation,
                    )
                )
                settled = await next_item(settled_q, what="quota.settled")
            assert settled.status == "settled"
            report = await operator.request(
                LearnerReportRequest(kind="models", workspace=workspace),
                LearnerReport,
                step="learner",
            )
            assert report is not None
        for app in apps:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://tally"
            ) as http:
                r = await http.get("/healthz")
                assert r.status_code == 200, r.text
        assert secure_bus.violations() == []  # nothing any service needed was refused
    finally:
        for app in reversed(apps):
            await app.stop()
