"""The catalogue of Tally's subjects and JetStream streams.

Every subject name in the system is spelled here once. A :class:`Catalog` applies the
namespace (empty in production; unique per test run) to subjects and stream names, so
parallel test runs and several Tally installations can share one NATS server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TASK_CREATED: Final = "task.created"
TASK_ESTIMATED: Final = "task.estimated"
TASK_ASSIGNED: Final = "task.assigned"
TASK_DEFERRED: Final = "task.deferred"
TASK_STATUS_CHANGED: Final = "task.status_changed"
RUN_STARTED: Final = "run.started"
RUN_EVENT: Final = "run.event"
RUN_FINISHED: Final = "run.finished"
RUN_RECORDED: Final = "run.recorded"
QUOTA_SETTLED: Final = "quota.settled"
QUOTA_ALERT: Final = "quota.alert"
LEARNER_SCORES_UPDATED: Final = "learner.scores.updated"
LEARNER_CALIBRATION_UPDATED: Final = "learner.calibration.updated"
LEARNER_POLICY_UPDATED: Final = "learner.policy.updated"
#: A learning job waiting for a worker, one subject per priority (a work queue: each job
#: message is taken by one worker and removed once its job ends).
LEARNER_JOB_QUEUED_P0: Final = "learner.job.queued.p0"
LEARNER_JOB_QUEUED_P1: Final = "learner.job.queued.p1"
LEARNER_JOB_QUEUED_P2: Final = "learner.job.queued.p2"

#: Request/reply subjects. No stream captures them (streams list their subjects one by
#: one): a stream's PubAck would otherwise answer the request before the service does.
TASK_ESTIMATE: Final = "task.estimate"
QUOTA_RESERVE: Final = "quota.reserve"
#: Several reservations in one request (the assigner's batches).
QUOTA_RESERVE_MANY: Final = "quota.reserve_many"
QUOTA_RELEASE: Final = "quota.release"
QUOTA_USAGE: Final = "quota.usage"
ASSIGN_RECOMMEND: Final = "assign.recommend"
#: Freeze or unfreeze a subscription (answered by the quota service).
QUOTA_FREEZE: Final = "quota.freeze"
#: Restore the Redis counters from the Postgres ledger (answered by the quota service).
QUOTA_REBUILD: Final = "quota.rebuild"
#: Create, list or stop an A/B experiment (answered by the assigner).
ASSIGN_EXPERIMENT: Final = "assign.experiment"
#: Plan (and optionally carry out) a batch assignment of pending tasks.
ASSIGN_BATCH: Final = "assign.batch"
#: The learner's velocity, model and experiment reports.
LEARNER_REPORT: Final = "learner.report"
#: Completed tasks imported as estimation history (answered by the estimator).
HISTORY_IMPORT: Final = "history.import"
#: Start, read, list, cancel, promote learning jobs (answered by the learner).
LEARNER_JOB_COMMAND: Final = "learner.job.command"

#: Core-NATS notice (not persisted): quota was given back, deferred tasks may now fit.
QUOTA_FREED: Final = "quota.freed"
#: Core-NATS notice (not persisted): a workspace's history changed; every estimator
#: replica drops its model of it at once.
HISTORY_CHANGED: Final = "history.changed"

#: Every request/reply and notice subject: no stream may capture them.
UNSTREAMED: Final = (
    TASK_ESTIMATE,
    QUOTA_RESERVE,
    QUOTA_RESERVE_MANY,
    QUOTA_RELEASE,
    QUOTA_USAGE,
    ASSIGN_RECOMMEND,
    QUOTA_FREEZE,
    QUOTA_REBUILD,
    ASSIGN_EXPERIMENT,
    ASSIGN_BATCH,
    LEARNER_REPORT,
    HISTORY_IMPORT,
    QUOTA_FREED,
    LEARNER_JOB_COMMAND,
    HISTORY_CHANGED,
)

#: Live metric subjects (core NATS, not persisted): ``metrics.<name>``.
METRICS_PREFIX: Final = "metrics"
#: Dead letters: ``dlq.<service>``.
DLQ_PREFIX: Final = "dlq"


@dataclass(frozen=True)
class StreamSpec:
    """A JetStream stream: its base name and the base subjects it captures."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float = 30 * 24 * 3600
    #: ``limits`` keeps messages for ``max_age_s``; ``workqueue`` removes each once acked.
    retention: str = "limits"


STREAMS: Final[tuple[StreamSpec, ...]] = (
    StreamSpec(
        "TASKS",
        (TASK_CREATED, TASK_ESTIMATED, TASK_ASSIGNED, TASK_DEFERRED, TASK_STATUS_CHANGED),
    ),
    StreamSpec("RUNS", (RUN_STARTED, RUN_EVENT, RUN_FINISHED, RUN_RECORDED)),
    StreamSpec("QUOTA", (QUOTA_SETTLED, QUOTA_ALERT)),
    StreamSpec(
        "LEARNER",
        (LEARNER_SCORES_UPDATED, LEARNER_CALIBRATION_UPDATED, LEARNER_POLICY_UPDATED),
    ),
    StreamSpec("DLQ", (f"{DLQ_PREFIX}.>",), max_age_s=90 * 24 * 3600),
    StreamSpec(
        "LEARNING_JOBS",
        (LEARNER_JOB_QUEUED_P0, LEARNER_JOB_QUEUED_P1, LEARNER_JOB_QUEUED_P2),
        retention="workqueue",
    ),
)


@dataclass(frozen=True)
class Catalog:
    """Subject and stream names under one namespace.

    >>> Catalog("t1").subject("task.created")
    't1.task.created'
    >>> Catalog("").stream("TASKS")
    'TALLY_TASKS'
    """

    namespace: str = ""

    def subject(self, base: str) -> str:
        """The full subject for a base subject such as ``task.created``."""
        return f"{self.namespace}.{base}" if self.namespace else base

    def stream(self, base: str) -> str:
        """The full JetStream stream name for a base name such as ``TASKS``."""
        prefix = self.namespace.upper().replace(".", "_").replace("-", "_")
        return f"{prefix}_{base}" if prefix else f"TALLY_{base}"

    def durable(self, service: str, base_subject: str) -> str:
        """The durable consumer name a service uses for one subject (shared by replicas)."""
        return f"{service}-{base_subject.replace('.', '-').replace('>', 'all')}"

    def stream_for(self, base_subject: str) -> str:
        """The stream that captures a base subject."""
        for spec in STREAMS:
            if base_subject in spec.subjects:
                return self.stream(spec.name)
        if base_subject.startswith(f"{DLQ_PREFIX}."):
            return self.stream("DLQ")
        raise KeyError(f"no stream captures subject {base_subject!r}")

    def dlq(self, service: str) -> str:
        """The dead-letter subject of a service."""
        return self.subject(f"{DLQ_PREFIX}.{service}")

    def metrics(self, name: str) -> str:
        """A live metric subject such as ``metrics.velocity``."""
        return self.subject(f"{METRICS_PREFIX}.{name}")
