"""Events to table rows: what the tracker stores for each message it receives."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

import structlog

from tally import metrics
from tally.events import (
    QualitySignals,
    RunEvent,
    RunFinished,
    RunStarted,
    TaskCreated,
    TaskEstimated,
    TaskStatusChanged,
)
from tally.events.runs import WorkerCall
from tally.money import usd_to_micros
from tally.pricing import Price, Pricer
from tally.registry import ModelRegistry
from tally.usage import TokenUsage, normalize_usage

log = structlog.get_logger(__name__)


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


def estimate_facts(e: TaskEstimated) -> dict[str, Any]:
    """The columns of a task that its estimate sets."""
    est = e.estimate
    return {
        "story_points": est.story_points,
        "hours_p50": est.hours_p50,
        "hours_p90": est.hours_p90,
        "value_score": est.value_score,
        "task_type": est.task_type,
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
    "duration_ms", "command", "action", "invocation_kind", "currency", "cost_micros",
    "cost_known", "at", "metadata",
)  # fmt: skip


class Prices(Protocol):
    def model_of(self, run_id: str, call: WorkerCall) -> tuple[str | None, str | None]: ...

    def price(
        self,
        usage: TokenUsage,
        model: str | None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
    ) -> Price: ...


class BatchPrices:
    """Prices as one batch sees them: each model id is resolved once per batch.

    The registry's prices override the catalogue's (`tally.pricing`). Every registry
    lookup checks the file for changes; once per batch is enough to pick up an edit. A
    call no price is known for is counted (``tally_unpriced_usage_total``) and warned
    about, once per model and batch.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        run_models: Mapping[str, tuple[str | None, str | None]] | None = None,
    ) -> None:
        self._pricer = Pricer(registry)
        self._run_models = run_models or {}
        self._warned: set[tuple[str | None, str | None]] = set()

    def model_of(self, run_id: str, call: WorkerCall) -> tuple[str | None, str | None]:
        """The call's model and provider; a call that names no model, its run's."""
        if call.model:
            return call.model, call.provider
        model, provider = self._run_models.get(run_id, (None, None))
        return model, call.provider or provider

    def price(
        self,
        usage: TokenUsage,
        model: str | None,
        *,
        provider: str | None = None,
        at: datetime | None = None,
    ) -> Price:
        price: Price = self._pricer.price(usage, model, provider=provider, at=at)
        if not price.known:
            metrics.UNPRICED_USAGE.of("tracker").inc()
            if (model, provider) not in self._warned:
                self._warned.add((model, provider))
                log.warning("model_price_unknown", model=model, provider=provider)
        return price


def event_record(e: RunEvent) -> tuple[Any, ...]:
    """A timeline event's `run_events` values (`EVENT_COLUMNS`); ``detail`` as JSON text."""
    detail = e.detail
    return (e.event_id, e.run_id, e.workspace, detail.kind, e.at, detail.model_dump_json())


def usage_record(e: RunEvent, call: WorkerCall, prices: Prices) -> tuple[Any, ...]:
    """A worker call's `token_usage` values (`USAGE_COLUMNS`), normalised and priced.

    A call that names no model is stored and priced as its run's model (when the run has
    started). The usage is normalised from the provider's payload. The caller's
    ``cost_usd`` wins; otherwise the call is priced by ``prices`` (the registry, then the
    catalogue; cache reads and writes at their own prices). A call no price is known for
    is stored with ``cost_micros`` NULL and ``cost_known`` false, never as $0.
    ``metadata`` is JSON text.

    Raises:
        UsageError: the usage payload cannot be read.
    """
    model, provider = prices.model_of(e.run_id, call)
    usage = normalize_usage(call.usage, provider=provider)
    cost: int | None
    if call.cost_usd is not None:
        cost = usd_to_micros(call.cost_usd)
    else:
        cost = prices.price(usage, model, provider=provider, at=e.at).micros
    duration = call.latency_ms
    if duration is None and call.started_at and call.finished_at:
        duration = (call.finished_at - call.started_at).total_seconds() * 1000
    return (
        e.event_id,
        e.run_id,
        e.workspace,
        call.worker,
        model,
        provider,
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
        cost is not None,
        e.at,
        _usage_metadata(usage),
    )


@functools.lru_cache(maxsize=64)
def _shape_only(shape: str) -> str:
    return json.dumps({"shape": shape})


def _usage_metadata(usage: TokenUsage) -> str:
    """``token_usage.metadata`` as JSON text: the payload's shape and what else it held."""
    if not usage.extra:  # almost always: one text per shape
        return _shape_only(usage.provider_shape)
    return json.dumps({"shape": usage.provider_shape, **usage.extra})


_SUMMED = tuple(USAGE_COLUMNS.index(c) for c in metrics.USAGE_KEYS[3:])
_LABELS = tuple(USAGE_COLUMNS.index(c) for c in metrics.USAGE_KEYS[:3])


def usage_totals(records: Iterable[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """`usage_record` values summed per model, provider and workspace, as
    `metrics.count_usage` reads rows (``metrics.USAGE_KEYS``): its counters move by the
    same amounts as for each row, with one row per label set instead of one per call.
    Unknown costs (None) add nothing."""
    sums: dict[tuple[Any, ...], list[int]] = {}
    for r in records:
        key = tuple(r[i] for i in _LABELS)
        total = sums.get(key)
        if total is None:
            total = sums[key] = [0] * len(_SUMMED)
        for n, i in enumerate(_SUMMED):
            if r[i]:
                total[n] += r[i]
    return [
        dict(zip(metrics.USAGE_KEYS, (*key, *total), strict=True)) for key, total in sums.items()
    ]


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
