"""What operators and instrumented agents see of a running Tally (``tally up``): each
service's /metrics counts only its own work, and OpenTelemetry GenAI spans exported by the
real OpenTelemetry SDK become runs with the right tokens, once."""

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
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

import tally
from tally.cli.ops import SERVICES
from tally.db import create_engine
from tally.db.tables import run_events, runs, token_usage
from tally.events import new_id
from tally.settings import TallySettings

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


#: The reporter's bootstrap token in this test (an operator's admin token, never stored).
BOOTSTRAP = "tly_e2e-bootstrap-" + os.urandom(8).hex()
AUTH = {"Authorization": f"Bearer {BOOTSTRAP}"}


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


class Up:
    """``tally up`` in its own process, and what a test needs to talk to it."""

    def __init__(self, settings: TallySettings, env: dict[str, str], ports: dict[str, int]):
        self.settings = settings
        self.env = env
        self.ports = ports
        self.engine: AsyncEngine = create_engine(settings.database_url)
        self.reporter_url = f"http://127.0.0.1:{ports['reporter']}"

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tally.cli.main", *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )

    async def scalar(self, stmt: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(stmt)

    async def scraped(self, name: str, **labels: str) -> dict[str, float]:
        """The sum of ``name``'s samples matching ``labels`` on each service's /metrics."""
        return {k: sum(v) for k, v in (await self.samples(name, **labels)).items()}

    async def samples(self, name: str, **labels: str) -> dict[str, list[float]]:
        """``name``'s sample values matching ``labels``, by the service that served them."""
        found = {}
        async with httpx.AsyncClient() as http:
            for service, port in self.ports.items():
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                found[service] = [
                    s.value
                    for f in text_string_to_metric_families(text)
                    for s in f.samples
                    if s.name == name and labels.items() <= s.labels.items()
                ]
        return found


@pytest.fixture(scope="module")
async def up(stack: TallySettings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Up]:
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
        "TALLY_API_TOKEN": BOOTSTRAP,
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
    t = Up(stack, env, ports)
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
        yield t
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        await t.engine.dispose()


async def test_runs_recorded_summed_over_the_six_services_is_the_number_of_runs(up: Up) -> None:
    workspace = f"ws-{new_id()[:8]}"
    before = sum((await up.scraped("tally_runs_recorded_total")).values())
    run_ids = []
    s = up.settings
    async with tally.connect(s.nats_url, workspace=workspace, namespace=s.namespace) as t:
        for i in range(3):
            async with t.run(f"T-metrics-{i}", model="claude-sonnet-4") as run:
                await run.worker_call(
                    worker="coder",
                    model="claude-sonnet-4",
                    provider="anthropic",
                    usage={"input_tokens": 100, "output_tokens": 10 * (i + 1)},
                )
            run_ids.append(run.run_id)

    async def recorded() -> bool:
        done = await up.scalar(
            select(func.count()).where(runs.c.run_id.in_(run_ids), runs.c.outcome.is_not(None))
        )
        return bool(done == len(run_ids))

    await eventually(recorded, what="the three runs to be recorded")
    by_service = await eventually(
        lambda: _when(
            up.scraped("tally_runs_recorded_total"),
            lambda v: sum(v.values()) >= before + len(run_ids),
        ),
        what="the runs-recorded counter",
    )
    # Summed over every service's /metrics (what Prometheus does), each run counts once.
    assert sum(by_service.values()) == before + len(run_ids)
    assert {k for k, v in by_service.items() if v} == {"tracker"}

    # The tokens by model and workspace, on the tracker's port only.
    output = await up.scraped(
        "tally_tokens_total", kind="output", model="claude-sonnet-4", workspace=workspace
    )
    assert output == {**dict.fromkeys(SERVICES, 0.0), "tracker": 10 + 20 + 30}
    dollars = await up.scraped("tally_cost_usd_total", workspace=workspace)
    assert dollars["tracker"] > 0 and sum(dollars.values()) == dollars["tracker"]
    # Each durable consumer's lag is exported by its own service.
    lag = await up.samples("tally_consumer_pending")
    assert all(lag[s] for s in SERVICES), lag
    for service in SERVICES:
        own = await up.samples("tally_consumer_pending", service=service)
        assert not any(own[other] for other in SERVICES if other != service)
    build = await up.scraped("tally_build_info")
    assert build == dict.fromkeys(SERVICES, 1.0)


async def _when(value: Awaitable[T], ok: Callable[[T], bool]) -> T | None:
    v = await value
    return v if ok(v) else None


def _agent_spans(exporter: OTLPSpanExporter, memory: InMemorySpanExporter, workspace: str) -> None:
    """An agent instrumented with the OpenTelemetry SDK: one agent invocation, two model
    calls (GenAI semantic conventions, cache reads and writes included), one tool call."""
    provider = TracerProvider(
        resource=Resource.create({"service.name": "agent", "tally.workspace": workspace})
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    provider.add_span_processor(BatchSpanProcessor(memory))
    tracer = provider.get_tracer("agent-framework")
    with tracer.start_as_current_span(
        "invoke_agent coder",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": "agent-1",
            "gen_ai.agent.name": "coder",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.request.model": "claude-sonnet-4",
        },
    ):
        for input_tokens, cache_read, cache_write, output in (
            (1000, 600, 100, 200),
            (500, 0, 0, 50),
        ):
            with tracer.start_as_current_span(
                "chat claude-sonnet-4",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.provider.name": "anthropic",
                    "gen_ai.request.model": "claude-sonnet-4",
                    "gen_ai.response.model": "claude-sonnet-4",
                    "gen_ai.agent.name": "coder",
                    "gen_ai.usage.input_tokens": input_tokens,
                    "gen_ai.usage.cache_read.input_tokens": cache_read,
                    "gen_ai.usage.cache_creation.input_tokens": cache_write,
                    "gen_ai.usage.output_tokens": output,
                },
            ):
                pass
        with tracer.start_as_current_span(
            "execute_tool pytest",
            attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "pytest"},
        ):
            pass
    assert provider.force_flush(10_000)
    provider.shutdown()


async def test_spans_from_the_opentelemetry_sdk_become_a_run_with_its_tokens_once(up: Up) -> None:
    workspace = f"ws-{new_id()[:8]}"
    endpoint = f"{up.reporter_url}/v1/traces"
    memory = InMemorySpanExporter()
    exporter = OTLPSpanExporter(endpoint=endpoint, timeout=10, headers=AUTH)
    await asyncio.to_thread(_agent_spans, exporter, memory, workspace)
    spans = memory.get_finished_spans()
    root = next(s for s in spans if s.parent is None)
    run_id = f"otel-{root.context.trace_id:032x}"

    await eventually(
        lambda: up.scalar(select(runs.c.outcome).where(runs.c.run_id == run_id)),
        what="the run recorded from the spans",
    )
    kpi = json.loads(up.cli("report", run_id, "--json").stdout)
    tokens = kpi["kpi"]["tokens"] if "kpi" in kpi else kpi["tokens"]
    # OTel's input_tokens hold the cached part: 1000 = 300 new + 600 read + 100 written.
    assert (
        tokens["input_tokens"],
        tokens["cache_read_tokens"],
        tokens["cache_write_tokens"],
        tokens["output_tokens"],
    ) == (
        300 + 500,
        600,
        100,
        250,
    )
    report = up.cli("report", run_id)
    assert "Worker calls: 2" in report.stdout
    # The reporter timed those requests by route, and only the reporter exports that.
    timed = await up.scraped("tally_http_request_seconds_count", route="/runs/{run_id}/kpi")
    assert timed["reporter"] >= 2 and sum(timed.values()) == timed["reporter"]

    async def stored() -> tuple[Any, ...]:
        return (
            await up.scalar(select(func.count()).where(run_events.c.run_id == run_id)),
            await up.scalar(
                select(func.sum(token_usage.c.output_tokens)).where(token_usage.c.run_id == run_id)
            ),
            await up.scalar(select(runs.c.totals).where(runs.c.run_id == run_id)),
        )

    first = await stored()
    assert first[:2] == (3, 250)
    output_counted = await up.scraped("tally_tokens_total", kind="output", workspace=workspace)

    # The exporter sends the same spans again (gzipped this time): nothing changes.
    again = OTLPSpanExporter(
        endpoint=endpoint, timeout=10, compression=Compression.Gzip, headers=AUTH
    )
    assert await asyncio.to_thread(again.export, spans) == SpanExportResult.SUCCESS
    # Then another run: once the tracker recorded it, it had the copies before it too.
    s = up.settings
    async with (
        tally.connect(s.nats_url, workspace=workspace, namespace=s.namespace) as t,
        t.run("T-sentinel") as sentinel,
    ):
        await sentinel.note("after the second export")
    await eventually(
        lambda: up.scalar(select(runs.c.outcome).where(runs.c.run_id == sentinel.run_id)),
        what="the run after the second export",
    )
    assert await stored() == first
    assert await up.scraped("tally_tokens_total", kind="output", workspace=workspace) == (
        output_counted
    )
    assert output_counted["tracker"] == 250

    # A request that is not OTLP is refused, naming what is wrong.
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            endpoint, content=b"{not json", headers={"content-type": "application/json", **AUTH}
        )
        assert bad.status_code == 400 and "body" in bad.json()["message"]
        wrong = await http.post(endpoint, content=b"x", headers={"content-type": "text/plain"})
        assert wrong.status_code == 415 and "Content-Type" in wrong.json()["error"]
