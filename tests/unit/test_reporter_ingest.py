"""The OTLP/HTTP endpoint's answers: what an exporter is told, in its own encoding."""

from __future__ import annotations

import gzip

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from starlette.applications import Starlette

from services.reporter.auth import OPERATOR, Principal, raw_authorizer
from services.reporter.ingest import otlp_route
from services.reporter.otlp import PROTOBUF, Options
from services.reporter.ratelimit import RateLimiter
from tally.events import Event

PB = {"content-type": PROTOBUF, "authorization": "Bearer operator"}


class Tokens:
    """Three callers: an operator, a writer bound to workspace ``a`` and a reader of ``a``."""

    callers = {
        "operator": Principal("t1", "op", OPERATOR, frozenset({"tasks:write"})),
        "writer-a": Principal("t2", "writer", "a", frozenset({"tasks:write"})),
        "reader-a": Principal("t3", "reader", "a", frozenset({"runs:read"})),
    }

    async def authenticate(self, token: str) -> Principal | None:
        return self.callers.get(token)


def export(*, output_tokens: int = 5) -> bytes:
    """One lone ``chat`` span (a run of one call), as the OTLP exporter encodes it."""
    request = ExportTraceServiceRequest()
    span = request.resource_spans.add().scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = b"\x01" * 16, b"\x02" * 8, "chat"
    span.start_time_unix_nano, span.end_time_unix_nano = (
        1_700_000_000_000_000_000,
        (1_700_000_001_000_000_000),
    )
    for key, value in (("gen_ai.operation.name", "chat"), ("gen_ai.request.model", "gpt-5")):
        kv = span.attributes.add()
        kv.key, kv.value.string_value = key, value
    for key, n in (
        ("gen_ai.usage.input_tokens", 10),
        ("gen_ai.usage.output_tokens", output_tokens),
    ):
        kv = span.attributes.add()
        kv.key, kv.value.int_value = key, n
    return bytes(request.SerializeToString())


def client(
    published: list[Event], *, fail: bool = False, max_bytes: int = 1 << 20
) -> httpx.AsyncClient:
    async def publish(event: Event) -> bool:
        if fail:
            raise TimeoutError
        published.append(event)
        return True

    check = raw_authorizer(Tokens(), RateLimiter(rate=0, burst=1), "tasks:write")  # type: ignore[arg-type]
    app = Starlette(routes=[otlp_route(publish, Options(), max_bytes=max_bytes, authorize=check)])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r")


async def test_an_export_is_published_and_answered_in_protobuf() -> None:
    published: list[Event] = []
    async with client(published) as http:
        answer = await http.post("/v1/traces", content=export(), headers=PB)
        again = await http.post(
            "/v1/traces",
            content=gzip.compress(export()),
            headers={**PB, "content-encoding": "gzip"},
        )
    assert answer.status_code == again.status_code == 200
    assert answer.headers["content-type"] == PROTOBUF
    assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")
    kinds = [type(e).__name__ for e in published]
    assert kinds == ["RunEvent", "RunStarted", "RunFinished"] * 2
    assert [e.event_id for e in published[:3]] == [e.event_id for e in published[3:]]


async def test_traces_need_a_token_with_tasks_write_and_its_workspace() -> None:
    published: list[Event] = []
    plain = {"content-type": PROTOBUF}
    async with client(published) as http:
        anonymous = await http.post("/v1/traces", content=export(), headers=plain)
        unknown = await http.post(
            "/v1/traces", content=export(), headers={**plain, "authorization": "Bearer nope"}
        )
        reader = await http.post(
            "/v1/traces", content=export(), headers={**plain, "authorization": "Bearer reader-a"}
        )
        other = await http.post(
            "/v1/traces",
            content=export(),
            headers={**plain, "authorization": "Bearer writer-a", "x-tally-workspace": "b"},
        )
        assert not published
        own = await http.post(
            "/v1/traces", content=export(), headers={**plain, "authorization": "Bearer writer-a"}
        )
    assert anonymous.status_code == unknown.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert reader.status_code == 403 and other.status_code == 403
    # The OTLP error shape: a google.rpc.Status (PERMISSION_DENIED), not the API's JSON.
    assert other.content.startswith(b"\x08\x07\x12") and b"tally.workspace" in other.content
    assert own.status_code == 200 and {e.workspace for e in published} == {"a"}


async def test_a_refused_span_is_a_partial_success() -> None:
    async with client([]) as http:
        answer = await http.post("/v1/traces", content=export(output_tokens=-1), headers=PB)
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert partial.rejected_spans == 1
    assert "gen_ai.usage" in partial.error_message and "spans[0]" in partial.error_message


async def test_bad_requests_get_a_status_naming_the_field() -> None:
    async with client([], max_bytes=64) as http:
        garbage = await http.post("/v1/traces", content=b"\xff\xff", headers=PB)
        too_big = await http.post("/v1/traces", content=export(), headers=PB)
        as_text = await http.post(
            "/v1/traces", content=b"{}", headers={"content-type": "text/plain"}
        )
    assert garbage.status_code == 400
    # google.rpc.Status: code 3 (INVALID_ARGUMENT), then the message naming the field.
    assert garbage.content.startswith(b"\x08\x03\x12") and b"body:" in garbage.content
    assert too_big.status_code == 413
    assert as_text.status_code == 415 and "Content-Type" in as_text.json()["message"]


async def test_when_the_bus_does_not_take_the_events_the_exporter_is_told_to_retry() -> None:
    async with client([], fail=True) as http:
        answer = await http.post("/v1/traces", content=export(), headers=PB)
    assert answer.status_code == 503 and answer.headers["retry-after"] == "2"
