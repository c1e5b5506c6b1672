"""Tally's Postgres schema, as SQLAlchemy Core tables.

One writer per table: the comment on each table names the service that writes it.
Every other service only reads. Changes go through Alembic migrations
(``libs/tally/db/migrations``).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _created() -> Column[object]:
    return Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now())


# -- tracker ------------------------------------------------------------------------------
tasks = Table(
    "tasks",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("priority", String(2), nullable=False),
    Column("labels", JSONB, nullable=False, server_default="[]"),
    Column("task_type", String(64)),
    Column("dependencies", JSONB, nullable=False, server_default="[]"),
    Column("plan_id", String(128), index=True),
    Column("team_estimate", Float),
    Column("status", String(32), nullable=False, server_default="backlog"),
    Column("story_points", Float),
    Column("hours_p50", Float),
    Column("hours_p90", Float),
    Column("value_score", Float),
    Column("model", String(128)),
    Column("completed_at", DateTime(timezone=True)),
    Column("actual_hours", Float),
    Column("event_id", String(128), nullable=False),
    _created(),
    comment="writer: tracker",
)

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("task_id", String(128), nullable=False, index=True),
    Column("assignment_id", String(160)),
    Column("reservation_id", String(256)),
    Column("model", String(128)),
    Column("provider", String(64)),
    Column("agent_id", String(128)),
    Column("agent_ids", JSONB, nullable=False, server_default="[]"),
    Column("command", String(128)),
    Column("job_id", String(128)),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("outcome", String(16)),
    Column("success", Boolean),
    Column("quality", JSONB),
    Column("totals", JSONB),
    #: run.finished's event_count, and when the tracker first handled the finish
    Column("expected_events", Integer),
    Column("finish_seen_at", DateTime(timezone=True)),
    _created(),
    comment="writer: tracker",
)

#: run_events and token_usage are partitioned by month of ``at`` (tally/db/partitions.py):
#: their primary key holds the partition key, and a redelivery (same ``at``) conflicts.
run_events = Table(
    "run_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("run_id", String(128), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, primary_key=True),
    Column("detail", JSONB, nullable=False),
    Index("ix_run_events_run_id_at", "run_id", "at"),
    comment="writer: tracker",
    postgresql_partition_by="RANGE (at)",
)

token_usage = Table(
    "token_usage",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("run_id", String(128), nullable=False, index=True),
    Column("workspace", String(64), nullable=False),
    Column("task_id", String(128)),
    Column("worker", String(128)),
    Column("model", String(128)),
    Column("provider", String(64)),
    Column("phase", String(128)),
    Column("input_tokens", BigInteger, nullable=False, server_default="0"),
    Column("output_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cached_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_read_tokens", BigInteger, nullable=False, server_default="0"),
    Column("cache_write_tokens", BigInteger, nullable=False, server_default="0"),
    Column("reasoning_tokens", BigInteger, nullable=False, server_default="0"),
    Column("estimated", Boolean, nullable=False, server_default="false"),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Column("duration_ms", Float),
    Column("command", String(128)),
    Column("action", String(128)),
    Column("invocation_kind", String(64)),
    Column("currency", String(8)),
    #: integer micro-dollars; NULL when no price was known for the model (see cost_known)
    Column("cost_micros", BigInteger),
    #: false when neither the registry nor the price catalogue knew the model's price
    Column("cost_known", Boolean, nullable=False, server_default="true"),
    Column("at", DateTime(timezone=True), nullable=False, primary_key=True),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    comment="writer: tracker",
    postgresql_partition_by="RANGE (at)",
)

task_status_events = Table(
    "task_status_events",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("task_id", String(128), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("from_status", String(32)),
    Column("to_status", String(32), nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False),
    Column("command", String(128)),
    Column("job_id", String(128)),
    Column("task_run_id", String(128)),
    Column("agent_id", String(128)),
    Column("metadata", JSONB, nullable=False, server_default="{}"),
    Index("ix_task_status_events_task_id_changed_at", "task_id", "changed_at"),
    comment="writer: tracker",
)

# -- estimator ----------------------------------------------------------------------------
estimates = Table(
    "estimates",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False, index=True),
    Column("event_id", String(128), nullable=False),
    Column("story_points", Float, nullable=False),
    Column("band", String(16), nullable=False),
    Column("hours_p50", Float, nullable=False),
    Column("hours_p90", Float, nullable=False),
    Column("value_score", Float, nullable=False),
    Column("estimate", JSONB, nullable=False),
    _created(),
    comment="writer: estimator",
)

history_tasks = Table(
    "history_tasks",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("task_id", String(128), primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, server_default=""),
    Column("story_points", Float, nullable=False),
    Column("actual_hours", Float),
    Column("task_type", String(64)),
    Column("model", String(128)),
    Column("completed_at", DateTime(timezone=True)),
    # Import order: history without dates keeps the order of its file.
    Column("position", BigInteger, Identity(), nullable=False),
    Index("ix_history_tasks_workspace_position", "workspace", "position"),
    comment="writer: estimator (imported history of completed tasks)",
)

# -- assigner -----------------------------------------------------------------------------
assignments = Table(
    "assignments",
    metadata,
    Column("assignment_id", String(160), primary_key=True),
    Column("task_id", String(128), nullable=False, index=True),
    Column("workspace", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("subscription", String(64), nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("reservation_id", String(256), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("arm", String(64)),
    Column("detail", JSONB, nullable=False),
    _created(),
    comment="writer: assigner",
)

# -- assigner, continued ------------------------------------------------------------------
# Keyed by namespace too: installations (and test runs) sharing one database keep their
# deferred tasks and experiments apart.
#: Every estimated task the assigner has seen: its estimate (for escalation and batch
#: plans) and where it stands. ``status`` is ``assigned``, ``deferred`` or ``exhausted``.
#: ``namespace`` keeps installations that share a database (and test runs) apart: an
#: assigner retries only its own deferred tasks and applies only its own experiments.
assigner_tasks = Table(
    "assigner_tasks",
    metadata,
    Column("namespace", String(64), primary_key=True, server_default=""),
    Column("task_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("estimated", JSONB, nullable=False),
    Column("value_score", Float, nullable=False, server_default="0"),
    #: Models that failed this task: escalation never picks them again.
    Column("failed_models", JSONB, nullable=False, server_default="[]"),
    Column("reason", Text, nullable=False, server_default=""),
    Column("retry_after", DateTime(timezone=True)),
    Column("tries", Integer, nullable=False, server_default="0"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_assigner_tasks_namespace_status", "namespace", "status", "retry_after"),
    comment="writer: assigner",
)

experiments = Table(
    "experiments",
    metadata,
    Column("namespace", String(64), primary_key=True, server_default=""),
    Column("name", String(64), primary_key=True),
    Column("task_type", String(64)),
    Column("variants", JSONB, nullable=False),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="writer: assigner",
)


# -- quota --------------------------------------------------------------------------------
quota_ledger = Table(
    "quota_ledger",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("op_key", String(300), nullable=False, unique=True),
    Column("reservation_id", String(256), nullable=False, index=True),
    Column("subscription", String(64), nullable=False),
    Column("op", String(16), nullable=False),
    Column("tokens", BigInteger, nullable=False),
    #: integer micro-dollars, fallback_micros included
    Column("cost_micros", BigInteger, nullable=False),
    #: the part of a settle's cost charged at the fallback price for unpriced tokens
    Column("fallback_micros", BigInteger, nullable=False, server_default="0"),
    Column("day", String(10), nullable=False),
    Column("month", String(7), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Index("ix_quota_ledger_subscription_day", "subscription", "day"),
    comment="writer: quota (append-only)",
)

#: Each subscription's freeze switch per installation ``namespace``: the durable record
#: the Redis switch is restored from after Redis lost its data (``tally quota rebuild``).
quota_switches = Table(
    "quota_switches",
    metadata,
    Column("namespace", String(64), primary_key=True),
    Column("subscription", String(64), primary_key=True),
    Column("frozen", Boolean, nullable=False),
    Column("changed_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="writer: quota",
)

# -- learner ------------------------------------------------------------------------------
model_scores = Table(
    "model_scores",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("model", String(128), primary_key=True),
    Column("task_type", String(64), primary_key=True),
    Column("band", String(16), primary_key=True),
    Column("samples", Integer, nullable=False),
    Column("stats", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="writer: learner",
)

velocity_logs = Table(
    "velocity_logs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("task_id", String(128), nullable=False, index=True),
    Column("workspace", String(64), nullable=False),
    Column("model", String(128)),
    Column("task_type", String(64)),
    Column("story_points", Float),
    Column("estimated_hours", Float),
    Column("actual_hours", Float, nullable=False),
    Column("error_pct", Float),
    Column("velocity", Float),
    Column("history_velocity", Float),
    Column("change_pct", Float),
    Column("reward", Float),
    Column("at", DateTime(timezone=True), nullable=False),
    comment="writer: learner",
)

#: Running sums of ``velocity_logs.velocity`` per workspace and task type, kept with each
#: log row, so a run's historical velocity is one key lookup, not an average over every run.
velocity_totals = Table(
    "velocity_totals",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("task_type", String(64), primary_key=True),
    Column("runs", BigInteger, nullable=False),
    Column("velocity_sum", Float, nullable=False),
    comment="writer: learner",
)

policy_checkpoints = Table(
    "policy_checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("score", Float),
    Column("policy", JSONB, nullable=False),
    _created(),
    Index("ix_policy_checkpoints_workspace_created_at", "workspace", "created_at"),
    comment="writer: learner",
)


# -- learner, continued -------------------------------------------------------------------
#: One row per recorded run: what rewards, token calibration, A/B analysis and the daily
#: recomputation of the policy read. ``attempt`` counts the task's runs up to this one.
learner_runs = Table(
    "learner_runs",
    metadata,
    Column("run_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("task_id", String(128), nullable=False),
    Column("model", String(128), nullable=False),
    Column("task_type", String(64), nullable=False),
    Column("band", String(16), nullable=False),
    Column("attempt", Integer, nullable=False, server_default="1"),
    Column("success", Boolean, nullable=False),
    Column("quality", Float, nullable=False),
    Column("cost_micros", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    Column("estimated_tokens", BigInteger),
    Column("reward", Float, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_learner_runs_workspace_at", "workspace", "at"),
    Index("ix_learner_runs_task_id", "task_id"),
    comment="writer: learner",
)

#: Each workspace's routing-policy trainer (policy with its evidence, version and the runs
#: waiting for a full group), written in the same transaction as the run it learned from.
learner_state = Table(
    "learner_state",
    metadata,
    Column("workspace", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("state", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="writer: learner",
)

#: Every calibration the learner published, newest last: the history of its corrections.
calibrations = Table(
    "calibrations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=False),
    Column("calibration", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_calibrations_workspace_created_at", "workspace", "created_at"),
    comment="writer: learner",
)

#: What each scheduled learning pass changed, and by how much.
learning_reports = Table(
    "learning_reports",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("workspace", String(64), nullable=False),
    Column("report", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    comment="writer: learner",
)

#: API tokens of the reporter's HTTP API: only a SHA-256 of each token is kept (the token
#: itself is shown once, when created). ``workspace`` is ``*`` for an operator's token.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("token_id", String(32), primary_key=True),
    Column("name", String(128), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("workspace", String(64), nullable=False),
    Column("scopes", JSONB, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
    comment="writer: reporter",
)
