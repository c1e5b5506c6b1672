"""Contract test: schemathesis drives every endpoint of the reporter's OpenAPI document.

The reporter runs over a real port with the services its commands reach (estimator,
assigner, quota, tracker, learner) on real NATS, Postgres and Redis. For each operation a bounded
number of generated requests must get no 5xx from the API itself, only documented status
codes and content types, and answers that match their schemas.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.integration.conftest import ADMIN

if TYPE_CHECKING:
    from schemathesis import APIOperation, Case

    from tests.integration.conftest import Harness

pytestmark = pytest.mark.integration

#: Generated requests per operation: enough to reach every parameter, bounded in time.
EXAMPLES = 25
#: Streams until the client leaves: not a request/response endpoint to fuzz.
SKIP = {("GET", "/live/events")}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fuzz(operation: APIOperation, base_url: str) -> list[str]:
    """Run ``EXAMPLES`` generated requests against one operation; the failures, described."""
    failures: list[str] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],  # report, do not shrink: time is bounded
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Case) -> None:
        response = case.call(base_url=base_url, headers=ADMIN, timeout=30)
        check(case, response)
        if not anonymous:  # once per operation: without a token, a documented 401
            anonymous.append(case.call(base_url=base_url, timeout=30))
            check(case, anonymous[0])
            if anonymous[0].status_code != 401:
                failures.append(f"{case.as_curl_command()} without a token: not 401")

    def check(case: Case, response: Any) -> None:
        try:
            case.validate_response(response, checks=CHECKS)
        except (Exception, BaseExceptionGroup) as exc:  # every failure, with its request
            failures.append(f"{case.as_curl_command()}\n  -> {response.status_code}: {exc}")

    anonymous: list[Any] = []

    run()
    return failures


def fuzz_all(spec: dict[str, Any], base_url: str) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_dict(spec)
    tried, failures = 0, []
    for result in schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue
        tried += 1
        failures.extend(fuzz(operation, base_url))
    return tried, failures


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """``app`` served on a free loopback port for the block; yields its base URL."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="error")
    )
    task = asyncio.create_task(server.serve())
    base_url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base_url) as http:
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                try:
                    await http.get("/openapi.json")
                    break
                except httpx.TransportError:
                    if asyncio.get_running_loop().time() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        yield base_url
    finally:
        server.should_exit = True
        await task


async def test_every_endpoint_keeps_its_contract(harness: Harness) -> None:
    for service in ("quota", "estimator", "assigner", "tracker", "learner"):
        await harness.start(service)
    reporter = await harness.start("reporter", api_max_wait_s=1.0)
    async with serving(reporter) as base_url:
        async with httpx.AsyncClient(base_url=base_url) as http:
            spec = (await http.get("/openapi.json")).json()
        # Schemathesis calls are blocking: they run in a thread while this loop serves them.
        tried, failures = await asyncio.to_thread(fuzz_all, spec, base_url)
    assert tried == sum(len(methods) for methods in spec["paths"].values()) - len(SKIP)
    assert not failures, f"{len(failures)} contract failures:\n" + "\n".join(failures[:10])
