"""Prometheus metrics, defined in one place; each service serves its own on ``/metrics``.

Every service has a registry of its own (:func:`registry_for`), so six services sharing a
process (``tally up``) still export six disjoint sets of series and a ``sum`` in Prometheus
counts each event once. A metric is defined once below as a :class:`Family`, either

* shared: its first label is ``service``, and ``.labels(service, …)`` lands in that
  service's registry (events published, handler timings, consumer lag…), or
* owned by one service (``owner=``), the only one that ever changes it (runs recorded by
  the tracker, reservations by quota…): it exists in that service's registry alone.

The process's own collectors (CPU, memory, GC) go to the first registry made in a process,
so they too are exported once.
"""

from __future__ import annotations

import asyncio
import contextlib
import platform
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Generic, Protocol, TypeVar

import structlog
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    make_asgi_app,
)

log = structlog.get_logger(__name__)

M = TypeVar("M", Counter, Gauge, Histogram)

_FAMILIES: list[Family[Any]] = []
_REGISTRIES: dict[str, CollectorRegistry] = {}
_LOCK = threading.Lock()


class Family(Generic[M]):
    """One metric, instantiated in the registry of each service that exports it."""

    def __init__(
        self, make: Callable[[CollectorRegistry], M], labels: Sequence[str], owner: str | None
    ) -> None:
        if owner is None and labels[:1] != ["service"]:
            raise ValueError("a shared metric's first label is service")
        self._make: Callable[[CollectorRegistry], M] = make
        self.owner = owner
        self._by_service: dict[str, M] = {}
        _FAMILIES.append(self)

    def exported_by(self, service: str) -> bool:
        return self.owner in (None, service)

    def _add_to(self, service: str, registry: CollectorRegistry) -> None:
        self._by_service[service] = self._make(registry)

    def of(self, service: str) -> M:
        """This metric in ``service``'s registry."""
        registry_for(service)
        return self._by_service[service]

    def labels(self, *values: str) -> M:
        """The child for ``values``, in the registry of the service that owns the sample."""
        return self.of(self.owner or values[0]).labels(*values)


def _counter(name: str, doc: str, labels: list[str], owner: str | None = None) -> Family[Counter]:
    return Family(lambda r: Counter(name, doc, labels, registry=r), labels, owner)


def _gauge(name: str, doc: str, labels: list[str], owner: str | None = None) -> Family[Gauge]:
    return Family(lambda r: Gauge(name, doc, labels, registry=r), labels, owner)


def _histogram(
    name: str, doc: str, labels: list[str], buckets: Sequence[float], owner: str | None = None
) -> Family[Histogram]:
    return Family(
        lambda r: Histogram(name, doc, labels, registry=r, buckets=buckets), labels, owner
    )


def registry_for(service: str) -> CollectorRegistry:
    """``service``'s registry, with every metric it exports (made on first use)."""
    with _LOCK:
        registry = _REGISTRIES.get(service)
        if registry is not None:
            return registry
        registry = CollectorRegistry()
        if not _REGISTRIES:
            for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
                registry.register(collector)
        _REGISTRIES[service] = registry
        for family in _FAMILIES:
            if family.exported_by(service):
                family._add_to(service, registry)
    BUILD_INFO.labels(service, _version(), platform.python_version()).set(1)
    return registry


def _version() -> str:
    try:
        return version("tally")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


# -- every service -------------------------------------------------------------------------
BUILD_INFO = _gauge(
    "tally_build_info", "1, labelled with the running version", ["service", "version", "python"]
)
EVENTS_PUBLISHED = _counter(
    "tally_events_published_total", "Events published", ["service", "subject"]
)
DEAD_LETTERS = _counter(
    "tally_dead_letters_total", "Messages sent to the dead-letter subject", ["service", "subject"]
)
HANDLER_RETRIES = _counter(
    "tally_handler_retries_total",
    "Messages redelivered after a transient failure",
    ["service", "subject"],
)
HANDLE_SECONDS = _histogram(
    "tally_handle_seconds",
    "Time to handle one message or batch",
    ["service", "subject"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CONSUMER_PENDING = _gauge(
    "tally_consumer_pending",
    "Messages in the stream not yet delivered to the durable consumer (as of the scrape)",
    ["service", "stream", "consumer"],
)
CONSUMER_ACK_PENDING = _gauge(
    "tally_consumer_ack_pending",
    "Messages delivered to the durable consumer and not yet acknowledged (as of the scrape)",
    ["service", "stream", "consumer"],
)
CONSUMER_INFO_ERRORS = _counter(
    "tally_consumer_info_errors_total",
    "Scrapes that could not read a durable consumer's state (its lag series are dropped)",
    ["service", "consumer"],
)

# -- one service each ----------------------------------------------------------------------
ROWS_WRITTEN = _counter(
    "tally_rows_written_total", "Rows inserted into Postgres", ["table"], "tracker"
)
RUNS_RECORDED = _counter("tally_runs_recorded_total", "Runs recorded", ["outcome"], "tracker")
TOKENS = _counter(
    "tally_tokens_total",
    "Tokens stored, by kind (input excludes cache; cache_read, cache_write, output)",
    ["kind", "model", "provider", "workspace"],
    "tracker",
)
COST = _counter(
    "tally_cost_usd_total",
    "Dollars of the token usage stored",
    ["model", "provider", "workspace"],
    "tracker",
)
ESTIMATES = _counter("tally_estimates_total", "Estimates made", ["kind"], "estimator")
ASSIGNMENTS = _counter(
    "tally_assignments_total", "Tasks assigned", ["model", "strategy"], "assigner"
)
DEFERRALS = _counter(
    "tally_deferrals_total", "Tasks deferred for lack of quota", ["reason"], "assigner"
)
ESCALATIONS_DECLINED = _counter(
    "tally_escalations_declined_total",
    "Failed tasks not escalated: no untried model's expected value was positive",
    [],
    "assigner",
)
UNFILED_RUNS = _counter(
    "tally_learner_unfiled_runs_total",
    "Runs learned under an unknown task type or band (no estimate found for the task)",
    [],
    "learner",
)
RESERVATIONS = _counter(
    "tally_quota_reservations_total",
    "Quota reservations by result",
    ["subscription", "result"],
    "quota",
)
QUOTA_USED = _gauge(
    "tally_quota_used_ratio",
    "Share of a subscription's limit used or reserved in the current window",
    ["subscription", "period", "unit"],
    "quota",
)
QUOTA_FROZEN = _gauge(
    "tally_quota_frozen",
    "1 while a subscription's new reservations are frozen",
    ["subscription"],
    "quota",
)
SCORE_UPDATES = _counter("tally_learner_updates_total", "Model score updates", ["model"], "learner")
HTTP_SECONDS = _histogram(
    "tally_http_request_seconds",
    "Reporter HTTP requests by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    owner="reporter",
)
OTLP_SPANS = _counter(
    "tally_otlp_spans_total",
    "Spans received on the OTLP endpoint; ignored (not GenAI) and rejected (unreadable) among them",
    ["result"],
    "reporter",
)
CONSUMER_RESTARTS = _counter(
    "tally_consumer_restarts_total",
    "Pull loops or background tasks that crashed and were started again",
    ["service", "consumer"],
)
DEAD_LETTER_FAILURES = _counter(
    "tally_dead_letter_failures_total",
    "Dead letters that could not be published (the message is kept and redelivered)",
    ["service", "subject"],
)
EVENTS_DEFERRED = _counter(
    "tally_events_deferred_total",
    "Messages redelivered later because what they follow has not arrived yet (not a retry)",
    ["service", "subject"],
)
RUNS_RETOTALLED = _counter(
    "tally_runs_retotalled_total",
    "Recorded runs totalled again because events arrived after they were recorded",
    [],
    "tracker",
)
RUNS_INCOMPLETE = _counter(
    "tally_runs_recorded_incomplete_total",
    "Runs recorded with fewer stored events than run.finished announced",
    [],
    "tracker",
)
UNPRICED_USAGE = _counter(
    "tally_unpriced_usage_total",
    "Worker calls stored with cost_known = false: neither registry nor catalogue prices the model",
    [],
    "tracker",
)
ORPHAN_RUNS = _gauge(
    "tally_orphan_runs",
    "Runs with timeline events but no run.started after the orphan window",
    [],
    "reporter",
)
QUOTA_SETTLED_FROM_LEDGER = _counter(
    "tally_quota_settled_from_ledger_total",
    "Runs settled in the ledger only, because Redis no longer held their reservation "
    "(counters are short until `tally quota rebuild`)",
    ["subscription"],
    "quota",
)
QUOTA_FALLBACK_PRICED = _counter(
    "tally_quota_fallback_priced_total",
    "Settlements whose unpriced tokens were charged at the subscription's fallback price",
    ["subscription"],
    "quota",
)

LEARNING_JOBS = _gauge(
    "tally_learning_jobs",
    "Learning jobs by status (all workspaces), as stored",
    ["status"],
    "learner",
)
LEARNING_ITERATION_SECONDS = _histogram(
    "tally_learning_iteration_seconds",
    "Duration of one learning-job iteration (update, progress and state written)",
    [],
    (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    "learner",
)
LEARNING_BUDGET_ALERTS = _counter(
    "tally_learning_budget_alerts_total",
    "Learning jobs that reached 75%, 90% or 100% (stopped) of their budget",
    ["level"],
    "learner",
)


#: At most this many workspaces get series of their own; later ones count as ``other``.
MAX_WORKSPACES = 200
#: The label of a model the registry does not know, a provider none of its models has, and
#: a workspace past `MAX_WORKSPACES`: label sets stay bounded whatever agents send.
OTHER = "other"
_workspaces: set[str] = set()
#: Providers that keep their name as a label even for a model the registry does not know
#: (``gen_ai.provider.name`` values of the OpenTelemetry conventions, and common aliases).
PROVIDERS = frozenset(
    {
        "anthropic", "openai", "azure.ai.openai", "azure", "gcp.gemini", "gcp.vertex_ai",
        "google", "gemini", "aws.bedrock", "bedrock", "mistral_ai", "mistral", "cohere",
        "groq", "deepseek", "x_ai", "xai", "perplexity", "ollama", "ibm.watsonx.ai",
    }
)  # fmt: skip


class _Spec(Protocol):
    name: str
    provider: str


class _Models(Protocol):
    def resolve(self, model_id: str) -> Any: ...


def _workspace_label(workspace: str) -> str:
    if workspace in _workspaces:
        return workspace
    if len(_workspaces) >= MAX_WORKSPACES:
        return OTHER
    _workspaces.add(workspace)
    return workspace


#: `count_usage` reads these keys of each row (the tracker's `token_usage` columns)
USAGE_KEYS = (
    "model", "provider", "workspace", "input_tokens", "output_tokens", "cache_read_tokens",
    "cache_write_tokens", "cost_micros",
)  # fmt: skip
_KINDS = {
    "input": "input_tokens",
    "output": "output_tokens",
    "cache_read": "cache_read_tokens",
    "cache_write": "cache_write_tokens",
}


def count_usage(rows: Iterable[Mapping[str, Any]], models: _Models) -> None:
    """Add newly stored token usage to the token and dollar counters.

    The model label is the registry's name for the row's model, ``other`` when the registry
    does not know it; the provider is that model's, else the row's own if it is one of
    `PROVIDERS`, else ``other``.
    """
    # Summed per label set first: one counter update per series and batch, not per row.
    labels: dict[tuple[str | None, str | None, str], tuple[str, str, str]] = {}
    tokens: dict[tuple[str, str, str, str], int] = {}
    micros: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row["model"], row["provider"], row["workspace"])
        series = labels.get(key)
        if series is None:
            series = labels[key] = _labels(row, models)
        for kind, column in _KINDS.items():
            if row[column]:
                tokens[(kind, *series)] = tokens.get((kind, *series), 0) + row[column]
        if row["cost_micros"]:
            micros[series] = micros.get(series, 0) + row["cost_micros"]
    for token_series, count in tokens.items():
        TOKENS.labels(*token_series).inc(count)
    for cost_series, amount in micros.items():
        COST.labels(*cost_series).inc(amount / 1_000_000)


def _labels(row: Mapping[str, Any], models: _Models) -> tuple[str, str, str]:
    spec: _Spec | None = models.resolve(row["model"]) if row["model"] else None
    if spec is not None:
        model, provider = spec.name, spec.provider
    else:
        model = OTHER
        provider = row["provider"] if row["provider"] in PROVIDERS else OTHER
    return model, provider, _workspace_label(row["workspace"])


class _Consumer(Protocol):
    stream: str
    durable: str


async def observe_consumers(
    service: str, js: Any, consumers: Sequence[_Consumer], *, timeout: float = 2.0
) -> None:
    """Set the pending and ack-pending gauges of ``service``'s durable consumers.

    A consumer whose state cannot be read loses its series (a stale number would look
    fine) and counts in ``tally_consumer_info_errors_total``.
    """

    async def one(c: _Consumer) -> None:
        labels = (service, c.stream, c.durable)
        try:
            info = await asyncio.wait_for(js.consumer_info(c.stream, c.durable), timeout)
        except Exception as exc:  # any failure: the series go, the error is counted
            CONSUMER_INFO_ERRORS.labels(service, c.durable).inc()
            for gauge in (CONSUMER_PENDING, CONSUMER_ACK_PENDING):
                with contextlib.suppress(KeyError):
                    gauge.of(service).remove(*labels)
            log.warning("consumer_info_failed", consumer=c.durable, error=repr(exc))
            return
        CONSUMER_PENDING.labels(*labels).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(*labels).set(info.num_ack_pending or 0)

    await asyncio.gather(*(one(c) for c in consumers))


ASGI = Callable[[Any, Any, Any], Awaitable[None]]


def asgi_app(registry: CollectorRegistry, before: Callable[[], Awaitable[None]] | None) -> ASGI:
    """The ``/metrics`` endpoint for ``registry``; ``before`` refreshes gauges on a scrape."""
    inner = make_asgi_app(registry)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if before is not None and scope.get("type") == "http":
            await before()
        await inner(scope, receive, send)

    return app


class TimedHttp:
    """ASGI middleware: each HTTP request's duration in ``tally_http_request_seconds``.

    The route label is the matched route's template (``/runs/{run_id}``), so it stays
    bounded; requests no route matched share ``unmatched``. Starlette:
    ``app.add_middleware(TimedHttp)``.
    """

    def __init__(self, app: ASGI) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_SECONDS.labels(route, scope["method"], str(status)).observe(
                time.perf_counter() - started
            )
