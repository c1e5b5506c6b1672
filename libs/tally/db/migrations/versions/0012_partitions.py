"""run_events and token_usage partitioned by month of ``at`` (declarative, range); the
learner's velocity history kept as running sums (``velocity_totals``).

Each table is rebuilt as a partitioned parent with the same columns and indexes, a
``_default`` partition and this month's and the next two months' partitions; its rows are
copied over. The primary key becomes ``(event_id, at)`` (a partitioned table's unique keys
include the partition key): a redelivered event carries the same ``at``, so it still
conflicts and is stored once. ``tally db partitions`` creates later months, moves rows of
a month without a partition out of ``_default``, and drops partitions past retention
(``libs/tally/db/partitions.py``).

The hourly token rollup's statement triggers (``0010_report_indexes``) move to the new
``token_usage`` after its rows are copied, so the copy is not counted twice.

Revision ID: 0012_partitions
Revises: 0011_learning_jobs
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_partitions"
down_revision: str | None = "0011_learning_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each table's secondary indexes (name, columns), created on the parent: every partition
#: gets its own copy.
INDEXES = {
    "run_events": [
        ("ix_run_events_run_id_at", "run_id, at"),
        ("ix_run_events_at_run_id", "at, run_id"),
    ],
    "token_usage": [
        ("ix_token_usage_run_id", "run_id"),
        ("ix_token_usage_at_event_id", "at, event_id"),
        ("ix_token_usage_workspace_at_event_id", "workspace, at, event_id"),
        ("ix_token_usage_task_id", "task_id"),
    ],
}
#: The hourly rollup's triggers on token_usage (as ``0010_report_indexes`` made them).
TRIGGERS = {
    "token_usage": {
        "insert": "INSERT ON token_usage REFERENCING NEW TABLE AS new_rows",
        "update": "UPDATE ON token_usage REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
        "delete": "DELETE ON token_usage REFERENCING OLD TABLE AS old_rows",
    },
    "run_events": {},
}
#: The tables' comments (LIKE copies the columns' comments, not the table's).
COMMENT = "writer: tracker"
#: Months of partitions the migration creates from the current one.
MONTHS = 3


def _partition(table: str) -> None:
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_unpartitioned"')
    for name, _ in INDEXES[table]:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_unpartitioned"')
    op.execute(f'ALTER INDEX "pk_{table}" RENAME TO "pk_{table}_unpartitioned"')
    op.execute(
        f'CREATE TABLE "{table}" (LIKE "{table}_unpartitioned" INCLUDING DEFAULTS '
        f'INCLUDING COMMENTS, CONSTRAINT "pk_{table}" PRIMARY KEY (event_id, at)) '
        "PARTITION BY RANGE (at)"
    )
    op.execute(f"COMMENT ON TABLE \"{table}\" IS '{COMMENT}'")
    for name, columns in INDEXES[table]:
        op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    op.execute(f'CREATE TABLE "{table}_default" PARTITION OF "{table}" DEFAULT')
    op.execute(
        f"""
        DO $$
        DECLARE m date := date_trunc('month', now() AT TIME ZONE 'UTC')::date;
        BEGIN
          FOR i IN 0..{MONTHS - 1} LOOP
            EXECUTE format(
              'CREATE TABLE %I PARTITION OF "{table}" FOR VALUES FROM (%L) TO (%L)',
              '{table}_p' || to_char(m + make_interval(months => i), 'YYYYMM'),
              (m + make_interval(months => i))::timestamp AT TIME ZONE 'UTC',
              (m + make_interval(months => i + 1))::timestamp AT TIME ZONE 'UTC');
          END LOOP;
        END $$;
        """
    )
    op.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}_unpartitioned"')
    op.execute(f'DROP TABLE "{table}_unpartitioned"')  # its triggers go with it
    _triggers(table)


def _triggers(table: str) -> None:
    """The rollup's triggers on the rebuilt ``table``, once its rows are in."""
    for event, spec in TRIGGERS[table].items():
        op.execute(
            f"CREATE TRIGGER {table}_hourly_{event} AFTER {spec} "
            "FOR EACH STATEMENT EXECUTE FUNCTION token_usage_hourly_apply()"
        )


def _unpartition(table: str) -> None:
    op.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_partitioned"')
    for name, _ in INDEXES[table]:
        op.execute(f'ALTER INDEX "{name}" RENAME TO "{name}_partitioned"')
    op.execute(f'ALTER INDEX "pk_{table}" RENAME TO "pk_{table}_partitioned"')
    op.execute(
        f'CREATE TABLE "{table}" (LIKE "{table}_partitioned" INCLUDING DEFAULTS '
        f'INCLUDING COMMENTS, CONSTRAINT "pk_{table}" PRIMARY KEY (event_id))'
    )
    op.execute(f"COMMENT ON TABLE \"{table}\" IS '{COMMENT}'")
    for name, columns in INDEXES[table]:
        op.execute(f'CREATE INDEX "{name}" ON "{table}" ({columns})')
    op.execute(f'INSERT INTO "{table}" SELECT * FROM "{table}_partitioned"')
    op.execute(f'DROP TABLE "{table}_partitioned" CASCADE')
    _triggers(table)


def upgrade() -> None:
    for table in INDEXES:
        _partition(table)
    op.create_table(
        "velocity_totals",
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("task_type", sa.String(64), nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("velocity_sum", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("workspace", "task_type", name=op.f("pk_velocity_totals")),
        comment="writer: learner",
    )
    op.execute(
        "INSERT INTO velocity_totals (workspace, task_type, runs, velocity_sum) "
        "SELECT workspace, task_type, count(velocity), sum(velocity) FROM velocity_logs "
        "WHERE velocity IS NOT NULL AND task_type IS NOT NULL GROUP BY workspace, task_type"
    )


def downgrade() -> None:
    op.drop_table("velocity_totals")
    for table in INDEXES:
        _unpartition(table)
