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
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

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
    Index("ix_tasks_created_at_task_id", "created_at", "task_id"),
    Index("ix_tasks_workspace_created_at_task_id", "workspace", "created_at", "task_id"),
    Index("ix_tasks_completed_at", "completed_at"),
    Index("ix_tasks_workspace_completed_at", "workspace", "completed_at"),
    Index("ix_tasks_status_workspace", "status", "workspace"),
    comment="writer: tracker",
)

#: What ``task.estimated`` and ``task.assigned`` said of tasks not recorded yet (the
#: events can overtake ``task.created``): kept here until the task row exists, then
#: moved onto it, so ``tasks`` only ever holds created tasks.
task_facts_pending = Table(
    "task_facts_pending",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("story_points", Float),
    Column("hours_p50", Float),
    Column("hours_p90", Float),
    Column("value_score", Float),
    Column("task_type", String(64)),
    Column("model", String(128)),
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
    Index("ix_runs_finished_at", "finished_at"),
    Index("ix_runs_workspace_finished_at", "workspace", "finished_at"),
    Index("ix_runs_assignment_id", "assignment_id"),
    comment="writer: tracker",
)

#: Export pages of runs, oldest first by their natural time (a start, else the creation).
RUN_TIME = func.coalesce(runs.c.started_at, runs.c.created_at)
Index("ix_runs_natural_time", RUN_TIME, runs.c.run_id)
Index("ix_runs_workspace_natural_time", runs.c.workspace, RUN_TIME, runs.c.run_id)

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
    Index("ix_run_events_at_run_id", "at", "run_id"),
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
    # export pages and report windows: (time, id) keysets, whole or per workspace
    Index("ix_token_usage_at_event_id", "at", "event_id"),
    Index("ix_token_usage_workspace_at_event_id", "workspace", "at", "event_id"),
    Index("ix_token_usage_task_id", "task_id"),
    comment="writer: tracker",
    postgresql_partition_by="RANGE (at)",
)

#: ``token_usage`` summed per UTC hour, run, model, provider and command: what ``/tokens``
#: and the dashboard read for whole hours (the part hour at a window's start comes from
#: ``token_usage`` itself). Kept by triggers on ``token_usage`` in the writer's own
#: transaction (migration ``0010_report_indexes``), so every writer keeps it exact.
token_usage_hourly = Table(
    "token_usage_hourly",
    metadata,
    Column("hour", DateTime(timezone=True), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("run_id", String(128), nullable=False),
    Column("model", String(128)),
    Column("provider", String(64)),
    Column("command", String(128)),
    Column("calls", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    #: micro-dollars of the priced calls; ``unpriced_calls`` counts the others
    Column("cost_micros", BigInteger, nullable=False),
    Column("unpriced_calls", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Index(
        "ux_token_usage_hourly_key",
        "hour",
        "workspace",
        "run_id",
        "model",
        "provider",
        "command",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
    Index("ix_token_usage_hourly_workspace_hour", "workspace", "hour"),
    Index("ix_token_usage_hourly_run_id", "run_id"),
    comment="writer: triggers on token_usage (tracker)",
)

#: ``token_usage`` summed per UTC day, workspace and what its run is known by: the run's
#: agent, its assignment's subscription, the command (the call's, else the run's), model and
#: provider. A few rows a day, whatever the number of runs: ``/tokens`` and the dashboard read
#: the whole days of a window here. Kept exact by triggers on ``token_usage``, ``runs`` and
#: ``assignments`` (migration ``0015_usage_daily``): a run's figures move when it gets or
#: changes its agent, command or assignment.
token_usage_daily = Table(
    "token_usage_daily",
    metadata,
    Column("day", DateTime(timezone=True), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("agent_id", String(128)),
    Column("subscription", String(64)),
    Column("command", String(128)),
    Column("model", String(128)),
    Column("provider", String(64)),
    Column("calls", BigInteger, nullable=False),
    Column("input_tokens", BigInteger, nullable=False),
    Column("output_tokens", BigInteger, nullable=False),
    Column("cache_read_tokens", BigInteger, nullable=False),
    Column("cache_write_tokens", BigInteger, nullable=False),
    Column("reasoning_tokens", BigInteger, nullable=False),
    #: micro-dollars of the priced calls; ``unpriced_calls`` counts the others
    Column("cost_micros", BigInteger, nullable=False),
    Column("unpriced_calls", BigInteger, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Index(
        "ux_token_usage_daily_key",
        "day",
        "workspace",
        "agent_id",
        "subscription",
        "command",
        "model",
        "provider",
        unique=True,
        postgresql_nulls_not_distinct=True,
    ),
    Index("ix_token_usage_daily_workspace_day", "workspace", "day"),
    comment="writer: triggers on token_usage, runs and assignments",
)

#: A row per run and UTC month (its first instant) holding any of the run's ``run_events``
#: or ``token_usage`` rows: a read by run id bounds ``at`` by the run's first and last
#: month, so only those months' partitions are visited. Kept by triggers, append-only and
#: without a unique key so that writers never wait on each other (a pair may be stored
#: twice); migration ``0016_run_reads``.
run_months = Table(
    "run_months",
    metadata,
    Column("run_id", String(128), nullable=False),
    Column("month", DateTime(timezone=True), nullable=False),
    Index("ix_run_months_run_id_month", "run_id", "month"),
    comment="writer: triggers on run_events and token_usage (tracker)",
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
    Index("ix_task_status_events_changed_at_event_id", "changed_at", "event_id"),
    Index(
        "ix_task_status_events_workspace_changed_at_event_id",
        "workspace",
        "changed_at",
        "event_id",
    ),
    comment="writer: tracker",
)

#: Statuses of a task still in the flow: in a lane, or blocked inside one.
OPEN_STATUSES = ("in_progress", "ready_to_review", "ready_to_qa", "blocked")
_LANE_WRITER = "writer: triggers on task_status_events (tracker)"

#: Each task's place in the lanes, rebuilt from its moves whenever one is stored.
task_lanes = Table(
    "task_lanes",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("first_at", DateTime(timezone=True), nullable=False),
    Column("last_at", DateTime(timezone=True), nullable=False),
    Column("last_status", String(32), nullable=False),  #: of the latest move
    Column("lane", String(16)),  #: the lane it is in (before a block), None outside
    Column("blocked", Boolean, nullable=False),
    Column("entered_at", DateTime(timezone=True)),  #: when it last came into ``lane``
    #: hours of its closed stints per lane (the open one, since ``last_at``, is not in)
    Column("work_hours", Float, nullable=False),
    Column("review_hours", Float, nullable=False),
    Column("qa_hours", Float, nullable=False),
    Column("blocked_hours", Float, nullable=False),
    Index("ix_task_lanes_last_at", "last_at", postgresql_include=["first_at"]),
    Index(
        "ix_task_lanes_workspace_last_at", "workspace", "last_at", postgresql_include=["first_at"]
    ),
    Index("ix_task_lanes_first_at", "first_at"),
    Index("ix_task_lanes_workspace_first_at", "workspace", "first_at"),
    Index("ix_task_lanes_last_status_workspace", "last_status", "workspace"),
    comment=_LANE_WRITER,
)

#: The lanes (and ``blocked``) each task has left: its hours there, all visits, and when
#: it last left. The lane a task is in, and its block while blocked, have no row.
task_lane_times = Table(
    "task_lane_times",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("bucket", String(16), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("hours", Float, nullable=False),
    Column("left_at", DateTime(timezone=True), nullable=False),
    Index("ix_task_lane_times_left_at", "left_at", postgresql_include=["bucket", "hours"]),
    Index(
        "ix_task_lane_times_workspace_left_at",
        "workspace",
        "left_at",
        postgresql_include=["bucket", "hours"],
    ),
    comment=_LANE_WRITER,
)

#: Every move out of a lane (``event_id`` of the move), blocks in between left out.
task_lane_exits = Table(
    "task_lane_exits",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("task_id", String(128), nullable=False),
    Column("workspace", String(64), nullable=False),
    Column("lane", String(16), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Index("ix_task_lane_exits_task_id", "task_id"),
    Index("ix_task_lane_exits_at", "at", postgresql_include=["lane"]),
    Index("ix_task_lane_exits_workspace_at", "workspace", "at", postgresql_include=["lane"]),
    comment=_LANE_WRITER,
)

#: Per UTC day, workspace and lane (or ``blocked``): the moves out of it that day, and the
#: hours of the tasks that left it that day (``task_lane_times``' values, sorted).
task_lane_days = Table(
    "task_lane_days",
    metadata,
    Column("day", DateTime(timezone=True), primary_key=True),
    Column("workspace", String(64), primary_key=True),
    Column("bucket", String(16), primary_key=True),
    Column("exits", BigInteger, nullable=False),
    Column("hours", ARRAY(Float), nullable=False),
    Index("ix_task_lane_days_workspace_day", "workspace", "day"),
    comment=_LANE_WRITER,
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
    Index("ix_assignments_created_at", "created_at"),
    Index("ix_assignments_workspace_created_at", "workspace", "created_at"),
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
    #: What any reward function may look at (tool calls, verification, steps), so a
    #: learning job can reward the run with a function of its own. NULL before 0011.
    Column("signals", JSONB),
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


# -- learning jobs (learner) --------------------------------------------------------------
#: A learning job: its configuration, where it is (status, iteration, progress), the
#: trainer state it resumes from, its budget and its final report. ``epoch`` counts the
#: workers that claimed it: a worker writes only while the epoch it claimed is current, so
#: one that was presumed dead cannot count an iteration twice.
learning_jobs = Table(
    "learning_jobs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("name", String(128)),
    Column("priority", String(2), nullable=False),
    Column("status", String(16), nullable=False),
    Column("config", JSONB, nullable=False),
    Column("iteration", Integer, nullable=False, server_default="0"),
    Column("progress", JSONB, nullable=False, server_default="{}"),
    Column("state", JSONB),
    Column("epoch", Integer, nullable=False, server_default="0"),
    Column("worker", String(128)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("cancel_requested", Boolean, nullable=False, server_default="false"),
    #: Compute spent, priced in micro-dollars, and the budget alerts already raised.
    Column("spent_micros", BigInteger, nullable=False, server_default="0"),
    Column("alerts", JSONB, nullable=False, server_default="[]"),
    Column("report", JSONB),
    Column("error", Text),
    Column("promoted", JSONB),
    Column("created_by", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True)),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_learning_jobs_workspace_created_at", "workspace", "created_at"),
    Index("ix_learning_jobs_status", "status"),
    comment="writer: learner",
)

#: A job's evaluated checkpoints (the best few by score, and the newest, are kept).
learning_checkpoints = Table(
    "learning_checkpoints",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("job_id", String(64), nullable=False),
    Column("iteration", Integer, nullable=False),
    Column("score", Float),
    Column("evaluation", JSONB, nullable=False),
    Column("policy", JSONB, nullable=False),
    _created(),
    Index("ix_learning_checkpoints_job_id", "job_id"),
    comment="writer: learner",
)

#: The runs a job learned from, with the reward and group-relative advantage it gave them.
learning_job_runs = Table(
    "learning_job_runs",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("run_id", String(128), primary_key=True),
    Column("reward", Float, nullable=False),
    Column("advantage", Float, nullable=False),
    Column("held_out", Boolean, nullable=False),
    comment="writer: learner",
)

#: The probability the assigner had of choosing each assignment's model (``task.assigned``):
#: what off-policy evaluation divides by.
learner_propensities = Table(
    "learner_propensities",
    metadata,
    Column("task_id", String(128), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("model", String(128), nullable=False),
    Column("strategy", String(64), nullable=False),
    Column("propensity", Float),
    _created(),
    comment="writer: learner",
)
#: The quota service's alerts (``quota.alert``) as they fired: the threshold it applied
#: (a subscription's own, or 75/90/100) and the use that crossed it, in tokens or, for
#: ``metric = 'usd'``, integer micro-dollars. ``workspace`` is the one whose reservation
#: crossed it.
quota_alerts = Table(
    "quota_alerts",
    metadata,
    Column("event_id", String(128), primary_key=True),
    Column("workspace", String(64), nullable=False),
    Column("subscription", String(128), nullable=False),
    Column("period", String(8), nullable=False),
    Column("window_id", String(32), nullable=False),
    Column("metric", String(8), nullable=False),
    Column("threshold_pct", Integer, nullable=False),
    Column("used", BigInteger, nullable=False),
    Column("quota_limit", BigInteger, nullable=False),
    Column("fired_at", DateTime(timezone=True), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Index("ix_quota_alerts_fired_at", "fired_at"),
    Index("ix_quota_alerts_workspace_fired_at", "workspace", "fired_at"),
    comment="writer: reporter",
)

# The console's listings, newest first: runs by when they started (or were first seen),
# tasks by when they were created, across workspaces or within one.
Index(
    "ix_runs_listed",
    func.coalesce(runs.c.started_at, runs.c.created_at).desc(),
    runs.c.run_id,
)
Index(
    "ix_runs_workspace_listed",
    runs.c.workspace,
    func.coalesce(runs.c.started_at, runs.c.created_at).desc(),
    runs.c.run_id,
)
Index("ix_tasks_listed", tasks.c.created_at.desc(), tasks.c.task_id)
Index("ix_tasks_workspace_listed", tasks.c.workspace, tasks.c.created_at.desc(), tasks.c.task_id)
