"""OpenTelemetry GenAI spans, made by the real OpenTelemetry SDK, as Tally run events."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from services.reporter.otlp import (
    JSON,
    PROTOBUF,
    Ingest,
    Options,
    OtlpError,
    decode,
    media_type,
    to_events,
)
from tally.events import RunEvent, RunFinished, RunStarted
from tally.usage import normalize_usage

MAX = 1 << 20


def agent_run(
    resource: dict[str, Any] | None = None, *, fail: bool = False, **usage: int
) -> list[ReadableSpan]:
    """An agent invocation as an instrumented framework reports it: an ``invoke_agent``
    root, one ``chat`` call with usage (cache reads and writes included), one tool call."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(resource or {}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("agent")
    counts = {"input_tokens": 1200, "output_tokens": 300, "cache_read.input_tokens": 800,
              "cache_creation.input_tokens": 100} | usage  # fmt: skip
    with tracer.start_as_current_span(
        "invoke_agent coder",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.id": "agent-7",
            "gen_ai.agent.name": "coder",
            "gen_ai.conversation.id": "conv-42",
            "gen_ai.request.model": "claude-sonnet-4",
            "gen_ai.provider.name": "anthropic",
            "gen_ai.usage.input_tokens": 99_999,  # an agent's total: its calls are counted
        },
    ) as root:
        with tracer.start_as_current_span(
            "chat claude-sonnet-4",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": "claude-sonnet-4",
                "gen_ai.response.model": "claude-sonnet-4-20250514",
                "gen_ai.provider.name": "anthropic",
                "gen_ai.agent.name": "coder",
                **{f"gen_ai.usage.{k}": v for k, v in counts.items()},
            },
        ):
            pass
        with tracer.start_as_current_span(
            "execute_tool run_tests",
            attributes={
                "gen_ai.operation.name": "execute_tool",
                "gen_ai.tool.name": "run_tests",
                "gen_ai.tool.call.id": "call-1",
            },
        ):
            pass
        if fail:
            root.set_status(Status(StatusCode.ERROR, "gave up"))
    provider.shutdown()
    return list(exporter.get_finished_spans())


def protobuf(spans: list[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializeToString())


def otlp_json(spans: list[ReadableSpan]) -> bytes:
    """The OTLP/JSON encoding: protobuf's JSON mapping with ids in hex, not base64."""
    data = json_format.MessageToDict(encode_spans(spans))

    def hexify(obj: Any) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                if k in ("traceId", "spanId", "parentSpanId"):
                    obj[k] = base64.b64decode(v).hex()
                else:
                    hexify(v)
        elif isinstance(obj, list):
            for v in obj:
                hexify(v)

    hexify(data)
    return json.dumps(data).encode()


def events_of(
    body: bytes, kind: str = PROTOBUF, header: str | None = None, **options: Any
) -> Ingest:
    return to_events(decode(body, kind, None, max_bytes=MAX), Options(**options), header)


def by_type(events: list[Any]) -> Iterator[list[Any]]:
    for cls in (RunStarted, RunEvent, RunFinished):
        yield [e for e in events if isinstance(e, cls)]


def test_an_agent_run_becomes_a_run_its_model_call_and_its_tool_call() -> None:
    spans = agent_run({"tally.workspace": "acme"})
    ingest = events_of(protobuf(spans))
    assert (ingest.spans, ingest.rejected, ingest.ignored) == (3, 0, 0)
    (started,), timeline, (finished,) = by_type(ingest.events)
    root = next(s for s in spans if s.parent is None)
    trace = f"{root.context.trace_id:032x}"

    assert started.run_id == finished.run_id == f"otel-{trace}"
    assert started.task_id == "conv-42"
    assert (started.workspace, started.agent_id, started.model) == (
        "acme", "agent-7", "claude-sonnet-4",
    )  # fmt: skip
    assert finished.outcome == "complete" and finished.success
    assert finished.event_count == 2  # the tracker waits for both before totalling

    call = next(e.detail for e in timeline if e.detail.kind == "worker_call")
    assert call.model == "claude-sonnet-4-20250514" and call.provider == "anthropic"
    usage = normalize_usage(call.usage, provider=call.provider)
    # Only the chat call's tokens: the agent span's total is not counted again.
    assert (usage.cache_read_tokens, usage.cache_write_tokens, usage.output_tokens) == (
        800, 100, 300,
    )  # fmt: skip
    # OTel counts cache reads and writes inside input_tokens: counted once here.
    assert usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens == 1200
    note = next(e.detail for e in timeline if e.detail.kind == "note")
    assert note.text.startswith("tool run_tests (call-1): ")
    # Every id comes from the trace and span ids, so a second export is a duplicate.
    assert all(e.event_id.startswith(f"otel-{trace}-") for e in ingest.events)
    again = events_of(protobuf(spans))
    assert [e.event_id for e in again.events] == [e.event_id for e in ingest.events]
    assert ingest.response(PROTOBUF) == b""


def test_json_and_gzip_carry_the_same_spans() -> None:
    spans = agent_run()
    expected = [e.model_dump() for e in events_of(protobuf(spans)).events]
    assert [e.model_dump() for e in events_of(otlp_json(spans), JSON).events] == expected
    zipped = decode(gzip.compress(protobuf(spans)), PROTOBUF, "gzip", max_bytes=MAX)
    assert [e.model_dump() for e in to_events(zipped, Options()).events] == expected


def test_a_failed_agent_span_is_a_failed_run() -> None:
    (finished,) = [e for e in events_of(protobuf(agent_run(fail=True))).events
                   if isinstance(e, RunFinished)]  # fmt: skip
    assert (finished.outcome, finished.success) == ("error", False)


def test_run_task_and_workspace_come_from_attributes_or_the_header() -> None:
    spans = agent_run({"tally.run_id": "R-77", "tally.task_id": "T-9"})
    events = events_of(protobuf(spans), header="team-a").events
    assert {e.run_id for e in events} == {"R-77"}  # type: ignore[attr-defined]
    assert {e.workspace for e in events} == {"team-a"}
    (started,) = [e for e in events if isinstance(e, RunStarted)]
    assert started.task_id == "T-9"
    # A configured attribute name, and the resource's workspace over the header's.
    spans = agent_run({"job.run": "R-78", "tally.workspace": "acme"})
    events = events_of(protobuf(spans), header="team-a", run_attribute="job.run").events
    assert {e.run_id for e in events} == {"R-78"}  # type: ignore[attr-defined]
    assert {e.workspace for e in events} == {"acme"}


def test_a_span_with_unreadable_usage_is_refused_by_name_and_the_rest_accepted() -> None:
    ingest = events_of(protobuf(agent_run(output_tokens=-5)))
    assert ingest.rejected == 1
    assert "gen_ai.usage" in ingest.errors[0] and "output_tokens" in ingest.errors[0]
    assert "spans[" in ingest.errors[0]
    assert [type(e).__name__ for e in ingest.events] == ["RunEvent", "RunStarted", "RunFinished"]
    answer = json.loads(ingest.response(JSON))
    assert answer["partialSuccess"]["rejectedSpans"] == "1"


def test_spans_that_are_not_genai_are_ignored() -> None:
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("web").start_as_current_span("GET /health"):
        pass
    ingest = events_of(protobuf(list(exporter.get_finished_spans())))
    assert (ingest.spans, ingest.ignored, ingest.events) == (1, 1, [])


@pytest.mark.parametrize(
    ("body", "kind", "encoding", "field"),
    [
        (b"\xff\xff\xff", PROTOBUF, None, "body"),
        (b"{not json", JSON, None, "body"),
        (b'{"resourceSpans": 3}', JSON, None, "body"),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            JSON,
            None,
            "resourceSpans[0].scopeSpans[0].spans[0].traceId",
        ),
        (b"plain", PROTOBUF, "gzip", "Content-Encoding"),
        (gzip.compress(b"\n\x00" * 50)[:-12], PROTOBUF, "gzip", "Content-Encoding"),
        (b"", PROTOBUF, "br", "Content-Encoding"),
    ],
)
def test_an_unreadable_request_names_the_field(
    body: bytes, kind: str, encoding: str | None, field: str
) -> None:
    with pytest.raises(OtlpError) as caught:
        decode(body, kind, encoding, max_bytes=MAX)
    assert caught.value.field == field


def test_a_bad_span_id_is_refused_naming_it() -> None:
    body = json.dumps(
        {
            "resourceSpans": [
                {
                    "scopeSpans": [
                        {
                            "spans": [
                                {
                                    "traceId": "00" * 16,
                                    "spanId": "01" * 8,
                                    "name": "chat",
                                    "startTimeUnixNano": "1",
                                    "endTimeUnixNano": "2",
                                }
                            ]
                        }
                    ]
                }
            ]
        }
    ).encode()
    ingest = events_of(body, JSON)
    assert ingest.rejected == 1 and "traceId" in ingest.errors[0]


def test_content_type_and_size_limits() -> None:
    assert media_type("application/json; charset=utf-8") == JSON
    with pytest.raises(OtlpError, match="Content-Type"):
        media_type("text/plain")
    with pytest.raises(OtlpError, match="body"):
        decode(gzip.compress(b"\0" * (MAX + 10)), PROTOBUF, "gzip", max_bytes=MAX)
