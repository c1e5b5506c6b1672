"""Events to table rows: what the tracker stores for each message it receives."""

from __future__ import annotations

import json
from typing import Any, Protocol

from tally.events import (
    QualitySignals,
    RunEvent,
    RunFinished,
    RunStarted,
    TaskCreated,
    TaskStatusChanged,
)
from tally.events.runs import WorkerCall
from tally.registry import ModelRegistry, ModelSpec
from tally.usage import normalize_usage


def task_row(e: TaskCreated) -> dict[str, Any]:
    return {
        "task_id": e.task_id,
        "workspace": e.workspace,
        "title": e.title,
        "description": e.description,
        "priority": e.priority,
        "labels": list(e.labels),
        "task_type": e.task_type,
        "dependencies": list(e.dependencies),
        "plan_id": e.plan_id,
        "team_estimate": e.team_estimate,
        "event_id": e.event_id,
    }


def run_row(e: RunStarted) -> dict[str, Any]:
    return {
        "run_id": e.run_id,
        "workspace": e.workspace,
        "task_id": e.task_id,
        "assignment_id": e.assignment_id,
        "reservation_id": e.reservation_id,
        "model": e.model,
        "provider": e.provider,
        "agent_id": e.agent_id,
        "agent_ids": list(e.agent_ids),
        "command": e.command,
        "job_id": e.job_id,
        "started_at": e.started_at,
    }


def status_row(e: TaskStatusChanged) -> dict[str, Any]:
    return {
        "event_id": e.event_id,
        "task_id": e.task_id,
        "workspace": e.workspace,
        "from_status": e.from_status,
        "to_status": e.to_status,
        "changed_at": e.changed_at,
        "command": e.command,
        "job_id": e.job_id,
        "task_run_id": e.task_run_id,
        "agent_id": e.agent_id,
        "metadata": e.metadata,
    }


#: `run_events` columns, in the order of `event_record`'s values
EVENT_COLUMNS = ("event_id", "run_id", "workspace", "kind", "at", "detail")
#: `token_usage` columns, in the order of `usage_record`'s values
USAGE_COLUMNS = (
    "event_id", "run_id", "workspace", "worker", "model", "provider", "phase",
    "input_tokens", "output_tokens", "cached_tokens", "cache_read_tokens",
    "cache_write_tokens", "reasoning_tokens", "estimated", "started_at", "finished_at",
    "duration_ms", "command", "action", "invocation_kind", "currency", "cost_usd", "at",
    "metadata",
)  # fmt: skip


class Prices(Protocol):
    def get(self, name: str) -> ModelSpec | None: ...


class BatchPrices:
    """The registry's models as one batch sees them: each model is looked up once.

    Every `ModelRegistry.get` checks the file for changes; once per batch is enough to
    pick up an edit.
    """

    def __init__(self, registry: ModelRegistry) -> None:
        self._registry = registry
        self._specs: dict[str, ModelSpec | None] = {}

    def get(self, name: str) -> ModelSpec | None:
        try:
            return self._specs[name]
        except KeyError:
            spec = self._specs[name] = self._registry.get(name)
            return spec


def event_record(e: RunEvent) -> tuple[Any, ...]:
    """A timeline event's `run_events` values (`EVENT_COLUMNS`); ``detail`` as JSON text."""
    detail = e.detail
    return (e.event_id, e.run_id, e.workspace, detail.kind, e.at, detail.model_dump_json())


def usage_record(e: RunEvent, call: WorkerCall, prices: Prices) -> tuple[Any, ...]:
    """A worker call's `token_usage` values (`USAGE_COLUMNS`), normalised and priced.

    The usage is normalised from the provider's payload. The caller's ``cost_usd`` wins;
    otherwise the registry's prices for the call's model are used (cache reads and writes
    at their own prices); unknown models cost nothing. ``metadata`` is JSON text.

    Raises:
        UsageError: the usage payload cannot be read.
    """
    usage = normalize_usage(call.usage, provider=call.provider)
    cost = call.cost_usd
    if cost is None:
        spec = prices.get(call.model) if call.model else None
        cost = spec.cost(usage) if spec else 0.0
    duration = call.latency_ms
    if duration is None and call.started_at and call.finished_at:
        duration = (call.finished_at - call.started_at).total_seconds() * 1000
    return (
        e.event_id,
        e.run_id,
        e.workspace,
        call.worker,
        call.model,
        call.provider,
        call.phase,
        usage.input_tokens,
        usage.output_tokens,
        usage.cached_tokens,
        usage.cache_read_tokens,
        usage.cache_write_tokens,
        usage.reasoning_tokens,
        usage.estimated,
        call.started_at,
        call.finished_at,
        duration,
        call.command,
        call.action,
        call.invocation_kind,
        call.currency,
        cost,
        e.at,
        json.dumps({"shape": usage.provider_shape, **usage.extra}),
    )


def finish_of(run: dict[str, Any]) -> RunFinished:
    """The ``run.finished`` a recorded run was totalled from, rebuilt from its row."""
    return RunFinished(
        event_id=f"finished-{run['run_id']}",
        workspace=run["workspace"],
        run_id=run["run_id"],
        task_id=run["task_id"],
        outcome=run["outcome"],
        success=bool(run["success"]),
        finished_at=run["finished_at"],
        reservation_id=run.get("reservation_id"),
        quality=QualitySignals.model_validate(run.get("quality") or {}),
        event_count=run.get("expected_events"),
    )
