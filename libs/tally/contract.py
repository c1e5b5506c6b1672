"""Tally's bus contract as documents: an AsyncAPI 3.0 description and JSON Schemas.

Generated from the subject catalogue (:mod:`tally.subjects`) and the pydantic event
models, so they cannot drift from the code: ``tally schema export DIR`` writes them,
``docs/contract/`` holds the committed copy (a test compares the two), and
:func:`documents` hands them to whoever serves them over HTTP.

Example:
    >>> docs = documents()
    >>> sorted(docs)[:2]
    ['asyncapi.yaml', 'schemas/assign.batch.json']
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from tally import subjects as S
from tally.events import (
    DeadLetter,
    Estimate,
    EstimateRequest,
    Event,
    ReleaseReply,
    ReleaseRequest,
    ReserveManyReply,
    ReserveManyRequest,
    ReserveReply,
    ReserveRequest,
    RunEvent,
    RunFinished,
    RunRecorded,
    RunStarted,
    TaskAssigned,
    TaskCreated,
    TaskDeferred,
    TaskEstimated,
    TaskStatusChanged,
    UsageReply,
    UsageRequest,
)
from tally.events.assign import (
    BatchReply,
    BatchRequest,
    ExperimentReply,
    ExperimentRequest,
    FreezeReply,
    FreezeRequest,
    QuotaFreed,
    RebuildReply,
    RebuildRequest,
    RecommendReply,
    RecommendRequest,
)
from tally.events.envelope import SCHEMA_VERSIONS
from tally.events.jobs import (
    JobQueuedP0,
    JobQueuedP1,
    JobQueuedP2,
    LearningJobCommand,
    LearningJobReply,
)
from tally.events.learner import CalibrationUpdated, PolicyUpdated, ScoresUpdated
from tally.events.learning import LearnerReport, LearnerReportRequest
from tally.events.plans import HistoryChanged, HistoryImportReply, HistoryImportRequest
from tally.events.quota import QuotaAlert, QuotaSettled

Kind = Literal["event", "request", "notice"]

#: Who may publish or consume besides the services: agents (any language, or the SDK),
#: the ``tally`` CLI, dashboards and operators.
AGENTS = "agents"

NAMESPACE_RULE = (
    "Every subject is prefixed with the installation's namespace and a dot when a "
    "namespace is set (`acme.task.created`); with no namespace (production default) the "
    "subject is used as listed. JetStream streams are named `<NAMESPACE>_<STREAM>` with the "
    "namespace upper-cased and `.`/`-` turned into `_`, or `TALLY_<STREAM>` with none."
)

COMPATIBILITY_RULE = (
    f"`schema_version` is the major version of every payload; this build reads "
    f"{SCHEMA_VERSIONS[0]}..{SCHEMA_VERSIONS[1]}. Within a major version changes are "
    "additive: readers ignore fields they do not know (never dead-lettering them), so "
    "publishers may be newer than Tally. A message with a higher `schema_version` is "
    "dead-lettered on `dlq.<service>` with the reason. Tally itself never sends a field "
    "outside its schema."
)


@dataclass(frozen=True)
class Channel:
    """One subject: what travels on it, who sends it and who reads it."""

    subject: str
    message: type[BaseModel]
    publishers: tuple[str, ...]
    consumers: tuple[str, ...]
    kind: Kind = "event"
    reply: type[BaseModel] | None = None


#: Every subject the services publish or consume, in flow order.
CHANNELS: tuple[Channel, ...] = (
    Channel(
        S.TASK_CREATED, TaskCreated, (AGENTS, "cli", "sdk", "reporter"), ("estimator", "tracker")
    ),
    Channel(
        S.TASK_ESTIMATED,
        TaskEstimated,
        ("estimator",),
        ("assigner", "tracker", AGENTS, "cli", "reporter"),
    ),
    Channel(
        S.TASK_ASSIGNED,
        TaskAssigned,
        ("assigner",),
        ("tracker", AGENTS, "cli", "reporter", "learner"),
    ),
    Channel(S.TASK_DEFERRED, TaskDeferred, ("assigner",), (AGENTS, "cli", "reporter")),
    Channel(
        S.TASK_STATUS_CHANGED, TaskStatusChanged, (AGENTS, "sdk", "cli", "reporter"), ("tracker",)
    ),
    Channel(S.RUN_STARTED, RunStarted, (AGENTS, "sdk", "reporter"), ("tracker",)),
    Channel(S.RUN_EVENT, RunEvent, (AGENTS, "sdk", "reporter"), ("tracker",)),
    Channel(S.RUN_FINISHED, RunFinished, (AGENTS, "sdk", "reporter"), ("tracker",)),
    Channel(
        S.RUN_RECORDED, RunRecorded, ("tracker",), ("learner", "quota", "assigner", "reporter")
    ),
    Channel(S.QUOTA_SETTLED, QuotaSettled, ("quota",), ("dashboards",)),
    Channel(S.QUOTA_ALERT, QuotaAlert, ("quota",), ("dashboards", AGENTS, "reporter")),
    Channel(S.LEARNER_SCORES_UPDATED, ScoresUpdated, ("learner",), ("assigner",)),
    Channel(S.LEARNER_CALIBRATION_UPDATED, CalibrationUpdated, ("learner",), ("estimator",)),
    Channel(S.LEARNER_POLICY_UPDATED, PolicyUpdated, ("learner",), ("assigner",)),
    Channel(
        S.TASK_ESTIMATE,
        EstimateRequest,
        ("cli", AGENTS, "reporter"),
        ("estimator",),
        "request",
        Estimate,
    ),
    Channel(S.QUOTA_RESERVE, ReserveRequest, ("assigner",), ("quota",), "request", ReserveReply),
    Channel(
        S.QUOTA_RESERVE_MANY,
        ReserveManyRequest,
        ("assigner",),
        ("quota",),
        "request",
        ReserveManyReply,
    ),
    Channel(
        S.QUOTA_RELEASE, ReleaseRequest, ("assigner", AGENTS), ("quota",), "request", ReleaseReply
    ),
    Channel(S.QUOTA_USAGE, UsageRequest, ("cli", "reporter"), ("quota",), "request", UsageReply),
    Channel(
        S.ASSIGN_RECOMMEND,
        RecommendRequest,
        ("estimator",),
        ("assigner",),
        "request",
        RecommendReply,
    ),
    Channel(S.QUOTA_FREEZE, FreezeRequest, ("cli", "reporter"), ("quota",), "request", FreezeReply),
    Channel(S.QUOTA_REBUILD, RebuildRequest, ("cli",), ("quota",), "request", RebuildReply),
    Channel(
        S.ASSIGN_EXPERIMENT, ExperimentRequest, ("cli",), ("assigner",), "request", ExperimentReply
    ),
    Channel(S.ASSIGN_BATCH, BatchRequest, ("cli",), ("assigner",), "request", BatchReply),
    Channel(
        S.LEARNER_REPORT,
        LearnerReportRequest,
        ("cli", "reporter"),
        ("learner",),
        "request",
        LearnerReport,
    ),
    Channel(
        S.HISTORY_IMPORT,
        HistoryImportRequest,
        ("cli",),
        ("estimator",),
        "request",
        HistoryImportReply,
    ),
    Channel(S.QUOTA_FREED, QuotaFreed, ("quota",), ("assigner",), "notice"),
    Channel(S.LEARNER_JOB_QUEUED_P0, JobQueuedP0, ("learner",), ("learner",)),
    Channel(S.LEARNER_JOB_QUEUED_P1, JobQueuedP1, ("learner",), ("learner",)),
    Channel(S.LEARNER_JOB_QUEUED_P2, JobQueuedP2, ("learner",), ("learner",)),
    Channel(
        S.LEARNER_JOB_COMMAND,
        LearningJobCommand,
        ("cli", "reporter"),
        ("learner",),
        "request",
        LearningJobReply,
    ),
    Channel(S.HISTORY_CHANGED, HistoryChanged, ("estimator",), ("estimator",), "notice"),
    Channel(
        f"{S.DLQ_PREFIX}.{{service}}",
        DeadLetter,
        ("estimator", "assigner", "quota", "tracker", "learner", "reporter"),
        ("cli",),
    ),
)


def _stream(channel: Channel) -> str | None:
    if channel.kind != "event":
        return None
    spec_name = next(
        (spec.name for spec in S.STREAMS if channel.subject in spec.subjects),
        "DLQ" if channel.subject.startswith(f"{S.DLQ_PREFIX}.") else None,
    )
    return f"TALLY_{spec_name}" if spec_name else None


def _schema_name(channel: Channel, reply: bool = False) -> str:
    base = channel.subject.replace("{service}", "service")
    return f"{base}.reply" if reply else base


def _strip_closed(schema: Any) -> Any:
    """Drop ``additionalProperties: false``: readers ignore unknown fields (tolerant)."""
    if isinstance(schema, dict):
        return {
            k: _strip_closed(v)
            for k, v in schema.items()
            if not (k == "additionalProperties" and v is False)
        }
    if isinstance(schema, list):
        return [_strip_closed(v) for v in schema]
    return schema


def _asyncapi_schema(schema: Any) -> Any:
    """AsyncAPI's Schema Object names a discriminator by its property only (pydantic writes
    OpenAPI's ``{"propertyName": …, "mapping": …}``)."""
    if isinstance(schema, dict):
        return {
            k: v["propertyName"]
            if k == "discriminator" and isinstance(v, dict)
            else _asyncapi_schema(v)
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_asyncapi_schema(v) for v in schema]
    return schema


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (draft 2020-12) per subject's payload and per reply.

    Keys are file names such as ``task.created.json`` or ``task.estimate.reply.json``.
    """
    out: dict[str, dict[str, Any]] = {"envelope.json": _standalone("envelope", Event)}
    for channel in CHANNELS:
        pairs = [(channel.message, False)]
        if channel.reply is not None:
            pairs.append((channel.reply, True))
        for model, is_reply in pairs:
            name = _schema_name(channel, is_reply)
            out[f"{name}.json"] = _standalone(name, model)
    return out


def _standalone(name: str, model: type[BaseModel]) -> dict[str, Any]:
    schema = _strip_closed(model.model_json_schema(mode="validation"))
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://tally.dev/contract/schemas/{name}.json",
        **schema,
    }


def _operation(channel: Channel, key: str, action: str) -> dict[str, Any]:
    who = channel.consumers if action == "receive" else channel.publishers
    op: dict[str, Any] = {
        "action": action,
        "channel": {"$ref": f"#/channels/{key}"},
        "summary": f"{'Consumed' if action == 'receive' else 'Published'} by {', '.join(who)}.",
        "messages": [{"$ref": f"#/channels/{key}/messages/{channel.message.__name__}"}],
    }
    if channel.reply is not None and action == "receive":
        op["reply"] = {
            "address": {"location": "$message.header#/reply_to"},
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{channel.reply.__name__}"}],
        }
    return op


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0 document of Tally's bus, from Tally's point of view.

    Every channel names its stream (``x-tally-stream``; none for request/reply and
    notices), publishers and consumers; ``send`` operations are what Tally's services
    publish, ``receive`` what they consume.
    """
    models: list[type[BaseModel]] = [Event]  # the envelope, as components/schemas/Event
    for channel in CHANNELS:
        models.append(channel.message)
        if channel.reply is not None:
            models.append(channel.reply)
    _, defs = models_json_schema(
        [(m, "validation") for m in dict.fromkeys(models)],
        ref_template="#/components/schemas/{model}",
    )
    schemas = _asyncapi_schema(_strip_closed(defs.get("$defs", {})))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    services = {"estimator", "assigner", "quota", "tracker", "learner", "reporter"}
    for channel in CHANNELS:
        key = _schema_name(channel).replace(".", "_")
        stream = _stream(channel)
        msgs = {
            channel.message.__name__: {"$ref": f"#/components/messages/{channel.message.__name__}"}
        }
        if channel.reply is not None:
            msgs[channel.reply.__name__] = {
                "$ref": f"#/components/messages/{channel.reply.__name__}"
            }
        entry: dict[str, Any] = {
            "address": "{namespace}" + channel.subject,
            "title": channel.subject,
            "description": _describe(channel, stream),
            "messages": msgs,
            "parameters": {
                "namespace": {
                    "description": "Empty, or the namespace followed by a dot (`acme.`)."
                },
            },
            "x-tally-kind": channel.kind,
            "x-tally-stream": stream,
            "x-tally-publishers": list(channel.publishers),
            "x-tally-consumers": list(channel.consumers),
        }
        if "{service}" in channel.subject:
            entry["parameters"]["service"] = {"enum": sorted(services)}
        channels[key] = entry
        if services & set(channel.consumers):
            operations[f"receive_{key}"] = _operation(channel, key, "receive")
        if services & set(channel.publishers):
            operations[f"send_{key}"] = _operation(channel, key, "send")
        messages[channel.message.__name__] = _message(channel.message, channel.kind)
        if channel.reply is not None:
            messages[channel.reply.__name__] = _message(channel.reply, "reply")
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Tally bus",
            "version": f"{SCHEMA_VERSIONS[1]}.0.0",
            "description": "Tally's events, requests and notices on NATS JetStream.\n\n"
            f"Namespace: {NAMESPACE_RULE}\n\nCompatibility: {COMPATIBILITY_RULE}\n\n"
            "Envelope: every payload carries `event_id`, `occurred_at` (ISO-8601 string), "
            "`schema_version`, `source`, `correlation_id` and `workspace`; publish events "
            "to JetStream with the header `Nats-Msg-Id` equal to `event_id` (the server "
            "drops a duplicate, the services store it once). See docs/events.md.",
        },
        "defaultContentType": "application/json",
        "servers": {
            "local": {"host": "127.0.0.1:4222", "protocol": "nats", "description": "NATS JetStream"}
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def _describe(channel: Channel, stream: str | None) -> str:
    where = {
        "event": f"JetStream stream {stream} (publish with `Nats-Msg-Id` = `event_id`).",
        "request": "Request/reply on core NATS (no stream); an error answers "
        '`{"error": "<message>"}`, with `"transient": true` when asking again may succeed.',
        "notice": "Core NATS notice, not persisted.",
    }[channel.kind]
    return f"{_summary(channel.message)} {where}".strip()


def _summary(model: type[BaseModel]) -> str:
    """The first line of a model's own docstring, or nothing."""
    lines = (model.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def _message(model: type[BaseModel], kind: str) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": model.__name__,
        "contentType": "application/json",
        "payload": {"$ref": f"#/components/schemas/{model.__name__}"},
    }
    if _summary(model):
        message["summary"] = _summary(model)
    if kind == "event":
        message["headers"] = {
            "type": "object",
            "required": ["Nats-Msg-Id"],
            "properties": {
                "Nats-Msg-Id": {"type": "string", "description": "The payload's event_id."}
            },
        }
    return message


def documents() -> dict[str, str]:
    """Every contract document as text, keyed by its path under the contract directory.

    ``asyncapi.yaml`` and ``schemas/<subject>.json``: what ``tally schema export``
    writes, and what an HTTP server can serve as-is (:func:`asyncapi` is the same
    document as a dict, for a JSON answer).
    """
    doc = asyncapi()
    out = {"asyncapi.yaml": yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)}
    for name, schema in json_schemas().items():
        out[f"schemas/{name}"] = json.dumps(schema, indent=2) + "\n"
    return dict(sorted(out.items()))


def export(directory: Path) -> list[Path]:
    """Write :func:`documents` under ``directory`` (created if missing); the paths written."""
    written = []
    for rel, text in documents().items():
        path = directory / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
