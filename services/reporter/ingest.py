"""``POST /v1/traces``: OpenTelemetry GenAI spans in (OTLP/HTTP), Tally run events out.

The body is an OTLP ``ExportTraceServiceRequest``, protobuf or JSON, plain or gzipped; the
spans become ``run.started``, ``run.event`` and ``run.finished`` on the bus (see
`services.reporter.otlp` for which span becomes what). The workspace is the resource
attribute ``tally.workspace``, else the ``X-Tally-Workspace`` header, else the default.

Answers follow the OTLP/HTTP specification: 200 with an ``ExportTraceServiceResponse`` in
the request's encoding (a partial success counts and explains spans that were refused);
400 with a ``google.rpc.Status`` naming the field when the request cannot be read; 413 when
it is too large; 415 for another content type; 401 without a live API token (``Authorization:
Bearer``, scope ``tasks:write``), 403 when the token lacks the scope or the spans name a
workspace other than the token's (a bound token's spans default to its workspace); 503
when the bus does not take the events (the exporter retries, and the retry changes
nothing).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import structlog
from nats.errors import Error as NatsError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.reporter.auth import Authorizer, Refusal
from services.reporter.otlp import JSON, Options, OtlpError, decode, media_type, to_events
from tally import metrics
from tally.errors import TallyError
from tally.events import Event

log = structlog.get_logger(__name__)

WORKSPACE_HEADER = "x-tally-workspace"
#: google.rpc.Code INVALID_ARGUMENT and UNAVAILABLE
_INVALID, _UNAVAILABLE = 3, 14
#: google.rpc.Code for 401, 403 and 429 answers
_CODES = {401: 16, 403: 7, 429: 8}


def otlp_route(
    publish: Callable[[Event], Awaitable[bool]],
    options: Options,
    *,
    max_bytes: int,
    authorize: Authorizer,
) -> Route:
    """The OTLP/HTTP trace receiver, publishing through ``publish``."""

    async def traces(request: Request) -> Response:
        try:
            kind = media_type(request.headers.get("content-type"))
        except OtlpError as exc:
            return _status(JSON, 415, _INVALID, str(exc))
        who = await authorize(request.headers.get("authorization"))
        if isinstance(who, Refusal):
            answer = _status(kind, who.status, _CODES[who.status], who.message)
            if who.status == 401:
                answer.headers["WWW-Authenticate"] = "Bearer"
            return answer
        try:
            body = await _read(request, max_bytes)
            export = decode(
                body, kind, request.headers.get("content-encoding"), max_bytes=max_bytes
            )
        except _TooLarge:
            return _status(kind, 413, _INVALID, f"body: over {max_bytes} bytes")
        except OtlpError as exc:
            return _status(kind, 400, _INVALID, str(exc))
        header = request.headers.get(WORKSPACE_HEADER)
        ingest = to_events(export, options, header or (None if who.operator else who.workspace))
        foreign = sorted({e.workspace for e in ingest.events if not who.owns(e.workspace)})
        if foreign:
            message = f"{options.workspace_attribute}: not the token's workspace: {foreign}"
            return _status(kind, 403, _CODES[403], message)
        try:
            for event in ingest.events:
                await publish(event)
        except (NatsError, TimeoutError, TallyError) as exc:
            log.warning("otlp_publish_failed", error=repr(exc))
            answer = _status(kind, 503, _UNAVAILABLE, "the bus did not take the events; retry")
            answer.headers["Retry-After"] = "2"
            return answer
        counts = {"received": ingest.spans, "ignored": ingest.ignored, "rejected": ingest.rejected}
        for result, n in counts.items():
            metrics.OTLP_SPANS.labels(result).inc(n)
        if ingest.rejected:
            log.warning("otlp_spans_rejected", rejected=ingest.rejected, errors=ingest.errors)
        return Response(ingest.response(kind), media_type=kind)

    return Route("/v1/traces", traces, methods=["POST"])


class _TooLarge(Exception):
    pass


async def _read(request: Request, max_bytes: int) -> bytes:
    """The body, refusing it as soon as it passes ``max_bytes``."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > max_bytes:
        raise _TooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _TooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _status(kind: str, http_status: int, code: int, message: str) -> Response:
    """A ``google.rpc.Status`` in the request's encoding (JSON also says ``error``)."""
    if kind == JSON:
        body = json.dumps({"code": code, "message": message, "error": message}).encode()
    else:
        text = message.encode()
        body = b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text
    return Response(body, status_code=http_status, media_type=kind)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)
