"""OpenTelemetry GenAI spans as Tally run events (pure: decoding and mapping, no I/O).

An OTLP/HTTP trace export (protobuf or JSON, optionally gzipped) is decoded with the
official ``opentelemetry-proto`` messages, and each span that follows the GenAI semantic
conventions becomes the events an agent using Tally's SDK would have published:

* the run: a span without a parent whose ``gen_ai.operation.name`` is set (an
  ``invoke_agent`` span, or a lone ``chat`` call), or any span without a parent that carries
  the run attribute (``tally.run_id``): ``run.started`` at its start, ``run.finished`` at
  its end (outcome ``error`` when the span's status is an error);
* an inference span (``chat``, ``text_completion``, ``generate_content``, ``embeddings``, or
  any span with ``gen_ai.usage.*`` other than an agent span): a ``worker_call`` with the
  span's model, provider, timing and usage (read by `tally.usage`, cache counted once);
* an ``execute_tool`` span: a timeline ``note`` naming the tool and how long it took.

Agent spans' own ``gen_ai.usage.*`` (totals some frameworks add) are not counted: their
calls are. Every span of a trace belongs to the run ``otel-<trace id>``, unless the span or
its resource carries the run attribute. Event ids derive from trace and span ids, so an
exporter's retry (or a second export of the same spans) changes nothing.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Status
from pydantic import ValidationError

from tally.events import Event, RunEvent, RunFinished, RunStarted
from tally.usage import UsageError, normalize_usage

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
#: Operations whose spans are model calls (GenAI semantic conventions).
INFERENCE = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
AGENT = "invoke_agent"
TOOL = "execute_tool"
USAGE_PREFIX = "gen_ai.usage."
#: Rejection messages kept in a partial-success answer (the count covers them all).
MAX_MESSAGES = 5


class OtlpError(ValueError):
    """The request as a whole cannot be read; ``field`` names where."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


class _Rejected(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")


@dataclass(frozen=True)
class Options:
    """Which attributes say run, task and workspace, and the workspace when none does."""

    run_attribute: str = "tally.run_id"
    task_attribute: str = "tally.task_id"
    workspace_attribute: str = "tally.workspace"
    default_workspace: str = "default"


@dataclass
class Ingest:
    """What one export became: the events to publish, in order, and the spans refused."""

    events: list[Event] = field(default_factory=list)
    spans: int = 0
    ignored: int = 0
    rejected: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, message: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_MESSAGES:
            self.errors.append(message)

    def response(self, content_type: str) -> bytes:
        """The OTLP answer: empty, or a partial success counting the rejected spans."""
        answer = ExportTraceServiceResponse()
        if self.rejected:
            answer.partial_success.rejected_spans = self.rejected
            answer.partial_success.error_message = "; ".join(self.errors)
        if content_type == JSON:
            return str(json_format.MessageToJson(answer, indent=None)).encode()
        return bytes(answer.SerializeToString())


# -- decoding ------------------------------------------------------------------------------
def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json`` from a Content-Type header.

    Raises:
        OtlpError: any other type.
    """
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise OtlpError("Content-Type", f"expected {PROTOBUF} or {JSON}, got {kind or 'none'}")
    return kind


def decode(body: bytes, kind: str, encoding: str | None, *, max_bytes: int) -> Any:
    """An ``ExportTraceServiceRequest`` from a request body.

    Raises:
        OtlpError: unknown encoding, a body over ``max_bytes`` once inflated, or a message
            that is not an OTLP trace export (the error names the field).
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "gzip":
        try:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            body = inflater.decompress(body, max_bytes + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise OtlpError("Content-Encoding", f"not valid gzip: {exc}") from exc
        if not inflater.eof and len(body) <= max_bytes:
            raise OtlpError("Content-Encoding", "not valid gzip: the stream is cut short")
    elif encoding != "identity":
        raise OtlpError("Content-Encoding", f"expected gzip or identity, got {encoding}")
    if len(body) > max_bytes:
        raise OtlpError("body", f"over {max_bytes} bytes")
    request = ExportTraceServiceRequest()
    if kind == PROTOBUF:
        try:
            request.ParseFromString(body)
        except DecodeError as exc:
            raise OtlpError("body", f"not an ExportTraceServiceRequest: {exc}") from exc
        return request
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OtlpError("body", f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise OtlpError("body", "expected a JSON object")
    _hex_ids_to_base64(data)
    try:
        json_format.ParseDict(data, request, ignore_unknown_fields=True)
    except json_format.ParseError as exc:
        raise OtlpError("body", str(exc)) from exc
    return request


def _hex_ids_to_base64(data: dict[str, Any]) -> None:
    """OTLP/JSON writes trace and span ids as hex; protobuf's JSON mapping wants base64."""
    for ri, rs in enumerate(_items(data, "resourceSpans", "resource_spans")):
        for si, ss in enumerate(_items(rs, "scopeSpans", "scope_spans")):
            for pi, span in enumerate(_items(ss, "spans")):
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                targets = [(span, where)] + [
                    (link, f"{where}.links[{li}]") for li, link in enumerate(_items(span, "links"))
                ]
                for obj, at in targets:
                    for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id"):
                        if isinstance(obj.get(key), str):
                            try:
                                raw = bytes.fromhex(obj[key])
                            except ValueError as exc:
                                raise OtlpError(f"{at}.{key}", "expected hex") from exc
                            obj[key] = base64.b64encode(raw).decode()


def _items(obj: Any, *keys: str) -> list[Any]:
    for key in keys:
        value = obj.get(key) if isinstance(obj, dict) else None
        if isinstance(value, list):
            return [v for v in value if isinstance(v, dict)]
    return []


# -- mapping -------------------------------------------------------------------------------
def to_events(request: Any, options: Options, header_workspace: str | None = None) -> Ingest:
    """The Tally events of an export's spans; spans that cannot be read are rejected.

    Run events come first, then each run's ``run.started`` and ``run.finished``; a run's
    ``event_count`` is the number of its events in this export, so the tracker waits for
    them before totalling.
    """
    out = Ingest()
    finished: list[RunFinished] = []
    started: list[RunStarted] = []
    per_run: Counter[str] = Counter()
    for ri, rs in enumerate(request.resource_spans):
        resource = attributes(rs.resource.attributes)
        workspace = resource.get(options.workspace_attribute) or header_workspace
        workspace = workspace or options.default_workspace
        for si, ss in enumerate(rs.scope_spans):
            for pi, span in enumerate(ss.spans):
                out.spans += 1
                where = f"resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]"
                try:
                    events = span_events(span, resource, str(workspace), options)
                except _Rejected as exc:
                    out.reject(f"{where}.{exc}")
                    continue
                except ValidationError as exc:
                    error = exc.errors()[0]
                    loc = ".".join(map(str, error["loc"]))
                    out.reject(f"{where}: {loc or 'span'}: {error['msg']}")
                    continue
                if not events:
                    out.ignored += 1
                for e in events:
                    if isinstance(e, RunEvent):
                        out.events.append(e)
                        per_run[e.run_id] += 1
                    elif isinstance(e, RunStarted):
                        started.append(e)
                    elif isinstance(e, RunFinished):
                        finished.append(e)
    out.events += started
    out.events += [f.model_copy(update={"event_count": per_run[f.run_id]}) for f in finished]
    return out


def span_events(
    span: Any, resource: dict[str, Any], workspace: str, options: Options
) -> list[Event]:
    """The events one span stands for (none for a span that is not GenAI)."""
    trace, span_id = _id(span.trace_id, "traceId", 16), _id(span.span_id, "spanId", 8)
    a = attributes(span.attributes)
    op = a.get("gen_ai.operation.name")
    run_id = str(a.get(options.run_attribute) or resource.get(options.run_attribute) or "")
    run_id = run_id or f"otel-{trace}"
    start, end = (
        _time(span.start_time_unix_nano, "startTimeUnixNano"),
        _time(span.end_time_unix_nano, "endTimeUnixNano"),
    )
    failed = span.status.code == Status.STATUS_CODE_ERROR
    common: dict[str, Any] = {
        "workspace": workspace,
        "source": "otlp",
        "correlation_id": run_id,
    }
    key = f"otel-{trace}-{span_id}"
    model = a.get("gen_ai.response.model") or a.get("gen_ai.request.model")
    provider = a.get("gen_ai.provider.name") or a.get("gen_ai.system")
    agent = a.get("gen_ai.agent.name") or a.get("gen_ai.agent.id")
    has_usage = any(k.startswith(USAGE_PREFIX) for k in a)
    events: list[Event] = []
    if op in INFERENCE or (has_usage and op != AGENT):
        usage = {k: v for k, v in a.items() if k.startswith(USAGE_PREFIX)}
        if not usage:
            raise _Rejected(f"attributes[{USAGE_PREFIX}input_tokens]", "missing: no token counts")
        try:
            normalize_usage(usage, provider=provider)
        except UsageError as exc:
            raise _Rejected(f"attributes[{USAGE_PREFIX}…]", str(exc)) from exc
        detail = {
            "kind": "worker_call",
            "worker": agent,
            "model": model,
            "provider": provider,
            "usage": usage,
            "latency_ms": (end - start).total_seconds() * 1000,
            "started_at": start,
            "finished_at": end,
            "action": op or span.name,
            "invocation_kind": "otel",
        }
        events.append(
            RunEvent(event_id=key, run_id=run_id, at=end, occurred_at=end, detail=detail, **common)
        )
    elif op == TOOL:
        tool = a.get("gen_ai.tool.name") or span.name
        call = a.get("gen_ai.tool.call.id")
        text = f"tool {tool}" + (f" ({call})" if call else "")
        text += f": {(end - start).total_seconds() * 1000:.0f} ms"
        if failed:
            text += f", failed: {span.status.message or 'error'}"
        detail = {"kind": "note", "text": text[:10_000]}
        events.append(
            RunEvent(event_id=key, run_id=run_id, at=end, occurred_at=end, detail=detail, **common)
        )
    if not span.parent_span_id and (op is not None or options.run_attribute in a):
        task_id = (
            a.get(options.task_attribute)
            or resource.get(options.task_attribute)
            or a.get("gen_ai.conversation.id")
            or run_id
        )
        agent_id = a.get("gen_ai.agent.id")
        events.append(
            RunStarted(
                event_id=f"{key}-started",
                run_id=run_id,
                task_id=str(task_id),
                model=model,
                provider=provider,
                agent_id=agent_id or agent,
                command=a.get("gen_ai.agent.name") or span.name,
                job_id=a.get("gen_ai.conversation.id"),
                started_at=start,
                occurred_at=start,
                **common,
            )
        )
        events.append(
            RunFinished(
                event_id=f"{key}-finished",
                run_id=run_id,
                task_id=str(task_id),
                outcome="error" if failed else "complete",
                success=not failed,
                finished_at=end,
                occurred_at=end,
                **common,
            )
        )
    return events


def attributes(kvs: Any) -> dict[str, Any]:
    """OTLP key-values as plain Python values (arrays as lists, bytes as hex)."""
    return {kv.key: _value(kv.value) for kv in kvs}


def _value(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _id(raw: bytes, name: str, size: int) -> str:
    if len(raw) != size or not any(raw):
        raise _Rejected(name, f"expected {size} bytes, not all zero")
    return binascii.hexlify(raw).decode()


def _time(nanos: int, name: str) -> datetime:
    if nanos <= 0:
        raise _Rejected(name, "missing")
    return datetime.fromtimestamp(nanos / 1e9, UTC)
