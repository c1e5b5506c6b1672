"""Prometheus metrics, defined in one place. Every service exports them on ``/metrics``."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

registry: CollectorRegistry = REGISTRY

EVENTS_PUBLISHED = Counter(
    "tally_events_published_total", "Events published", ["service", "subject"]
)
DEAD_LETTERS = Counter(
    "tally_dead_letters_total", "Messages sent to the dead-letter subject", ["service", "subject"]
)
HANDLER_RETRIES = Counter(
    "tally_handler_retries_total",
    "Messages redelivered after a transient failure",
    ["service", "subject"],
)
HANDLE_SECONDS = Histogram(
    "tally_handle_seconds",
    "Time to handle one message or batch",
    ["service", "subject"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROWS_WRITTEN = Counter("tally_rows_written_total", "Rows inserted into Postgres", ["table"])
ESTIMATES = Counter("tally_estimates_total", "Estimates made", ["kind"])
ASSIGNMENTS = Counter("tally_assignments_total", "Tasks assigned", ["model", "strategy"])
DEFERRALS = Counter("tally_deferrals_total", "Tasks deferred for lack of quota", ["reason"])
RESERVATIONS = Counter(
    "tally_quota_reservations_total", "Quota reservations by result", ["subscription", "result"]
)
QUOTA_USED = Gauge(
    "tally_quota_used_ratio",
    "Share of a subscription's limit used or reserved in the current window",
    ["subscription", "period", "unit"],
)
QUOTA_FROZEN = Gauge(
    "tally_quota_frozen", "1 while a subscription's new reservations are frozen", ["subscription"]
)
RUNS_RECORDED = Counter("tally_runs_recorded_total", "Runs recorded", ["outcome"])
SCORE_UPDATES = Counter("tally_learner_updates_total", "Model score updates", ["model"])
CONSUMER_RESTARTS = Counter(
    "tally_consumer_restarts_total",
    "Pull loops or background tasks that crashed and were started again",
    ["service", "consumer"],
)
DEAD_LETTER_FAILURES = Counter(
    "tally_dead_letter_failures_total",
    "Dead letters that could not be published (the message is kept and redelivered)",
    ["service", "subject"],
)
EVENTS_DEFERRED = Counter(
    "tally_events_deferred_total",
    "Messages redelivered later because what they follow has not arrived yet (not a retry)",
    ["service", "subject"],
)
RUNS_RETOTALLED = Counter(
    "tally_runs_retotalled_total",
    "Recorded runs totalled again because events arrived after they were recorded",
)
RUNS_INCOMPLETE = Counter(
    "tally_runs_recorded_incomplete_total",
    "Runs recorded with fewer stored events than run.finished announced",
)
ORPHAN_RUNS = Gauge(
    "tally_orphan_runs",
    "Runs with timeline events but no run.started after the orphan window",
)
UNPRICED_USAGE = Counter(
    "tally_unpriced_usage_total",
    "Worker calls stored with cost_known = false: neither registry nor catalogue prices the model",
)
QUOTA_FALLBACK_PRICED = Counter(
    "tally_quota_fallback_priced_total",
    "Settlements whose unpriced tokens were charged at the subscription's fallback price",
    ["subscription"],
)
