"""Indexes for every report and export query; token use rolled up per hour by triggers.

Every query of the reporter and of ``/export`` finds its rows through an index: export
pages walk ``(time, id)`` keysets (whole, or per workspace), report windows start from a
time index, ``/lanes`` finds open tasks by ``tasks.status``.

``token_usage_hourly`` sums ``token_usage`` per UTC hour, workspace, run, model, provider
and command. Statement-level triggers with transition tables keep it: each INSERT (COPY
included), UPDATE or DELETE on ``token_usage`` adds its rows' figures (and takes away the
old ones) in one grouped upsert, in the writer's own transaction. A trigger rather than
the tracker's code: every writer (the tracker, a restore, a hand fix, a benchmark's COPY)
keeps the rollup exact, and an ``ON CONFLICT DO NOTHING`` redelivery adds nothing, since
only rows really inserted are in the transition table. The upgrade fills the rollup from
the rows already stored.

Revision ID: 0010_report_indexes
Revises: 0009_api_tokens
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_report_indexes"
down_revision: str | None = "0009_api_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (index, table, columns or SQL expressions)
INDEXES: list[tuple[str, str, list[str]]] = [
    ("ix_token_usage_at_event_id", "token_usage", ["at", "event_id"]),
    ("ix_token_usage_workspace_at_event_id", "token_usage", ["workspace", "at", "event_id"]),
    ("ix_token_usage_task_id", "token_usage", ["task_id"]),
    ("ix_run_events_at_run_id", "run_events", ["at", "run_id"]),
    ("ix_task_status_events_changed_at_event_id", "task_status_events", ["changed_at", "event_id"]),
    (
        "ix_task_status_events_workspace_changed_at_event_id",
        "task_status_events",
        ["workspace", "changed_at", "event_id"],
    ),
    ("ix_tasks_created_at_task_id", "tasks", ["created_at", "task_id"]),
    ("ix_tasks_workspace_created_at_task_id", "tasks", ["workspace", "created_at", "task_id"]),
    ("ix_tasks_completed_at", "tasks", ["completed_at"]),
    ("ix_tasks_workspace_completed_at", "tasks", ["workspace", "completed_at"]),
    ("ix_tasks_status_workspace", "tasks", ["status", "workspace"]),
    ("ix_runs_finished_at", "runs", ["finished_at"]),
    ("ix_runs_workspace_finished_at", "runs", ["workspace", "finished_at"]),
    ("ix_assignments_created_at", "assignments", ["created_at"]),
    ("ix_assignments_workspace_created_at", "assignments", ["workspace", "created_at"]),
]

RUN_TIME = "coalesce(started_at, created_at)"

#: The rollup's key, and what each counter sums (from the rows of a transition table).
KEY = "hour, workspace, run_id, model, provider, command"
COUNTERS = {
    "calls": "count(*)",
    "input_tokens": "sum(input_tokens)",
    "output_tokens": "sum(output_tokens)",
    "cache_read_tokens": "sum(cache_read_tokens)",
    "cache_write_tokens": "sum(cache_write_tokens)",
    "reasoning_tokens": "sum(reasoning_tokens)",
    "cost_micros": "coalesce(sum(cost_micros), 0)",
    "unpriced_calls": "count(*) FILTER (WHERE NOT cost_known)",
    "duration_ms": "coalesce(sum(duration_ms), 0)",
}
HOUR = "date_bin('1 hour', at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"


def _apply(rows: str, sign: str) -> str:
    """SQL adding (sign ``+``) or taking away (``-``) the figures of ``rows`` to the rollup."""
    sums = ", ".join(f"{sign}{expr}" for expr in COUNTERS.values())
    sets = ", ".join(f"{c} = h.{c} + excluded.{c}" for c in COUNTERS)
    return (
        f"INSERT INTO token_usage_hourly AS h ({KEY}, {', '.join(COUNTERS)}) "
        f"SELECT {HOUR}, workspace, run_id, model, provider, command, {sums} "
        f"FROM {rows} GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6 "
        f"ON CONFLICT ({KEY}) DO UPDATE SET {sets};"
    )


FUNCTION = f"""
CREATE FUNCTION token_usage_hourly_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        {_apply("old_rows", "-")}
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        {_apply("new_rows", "")}
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGERS = {
    "insert": "INSERT ON token_usage REFERENCING NEW TABLE AS new_rows",
    "update": "UPDATE ON token_usage REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "DELETE ON token_usage REFERENCING OLD TABLE AS old_rows",
}


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)
    op.create_index("ix_runs_natural_time", "runs", [sa.text(RUN_TIME), "run_id"])
    op.create_index(
        "ix_runs_workspace_natural_time", "runs", ["workspace", sa.text(RUN_TIME), "run_id"]
    )
    op.create_table(
        "token_usage_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("model", sa.String(128)),
        sa.Column("provider", sa.String(64)),
        sa.Column("command", sa.String(128)),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in COUNTERS if c != "duration_ms"),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        comment="writer: triggers on token_usage (tracker)",
    )
    op.create_index(
        "ux_token_usage_hourly_key",
        "token_usage_hourly",
        KEY.split(", "),
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_index(
        "ix_token_usage_hourly_workspace_hour", "token_usage_hourly", ["workspace", "hour"]
    )
    op.execute(FUNCTION)
    for event, spec in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER token_usage_hourly_{event} AFTER {spec} "
            "FOR EACH STATEMENT EXECUTE FUNCTION token_usage_hourly_apply()"
        )
    op.execute(_apply("token_usage", ""))


def downgrade() -> None:
    for event in TRIGGERS:
        op.execute(f"DROP TRIGGER token_usage_hourly_{event} ON token_usage")
    op.execute("DROP FUNCTION token_usage_hourly_apply()")
    op.drop_table("token_usage_hourly")
    op.drop_index("ix_runs_workspace_natural_time", table_name="runs")
    op.drop_index("ix_runs_natural_time", table_name="runs")
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
