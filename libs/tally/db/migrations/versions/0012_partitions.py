"""run_events and token_usage partitioned by month of ``at`` (declarative, range); the
learner's velocity history kept as running sums (``velocity_totals``).

Each table is rebuilt as a partitioned parent with the same columns and indexes, a
``_default`` partition and this month's and the next two months' partitions; its rows are
copied over. The primary key becomes ``(event_id, at)`` (a partitioned table's unique keys
include the partition key): a redelivered event carries the same ``at``, so it still
conflicts and is stored once. ``tally db partitions`` creates later months, moves rows of
a month without a partition out of ``_default``, and drops partitions past retention
(``libs/tally/db/partitions.py``).

Revision ID: 0012_partitions
Revises: 0009_api_tokens
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_partitions"
down_revision: str | None = "0009_api_tokens"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Each table's secondary indexes (name, columns), created on the parent: every partition
#: gets its own copy.
INDEXES = {
    "run_events": [("ix_run_events_run_id_at", "run_id, at")],
    "token_usage": [("ix_token_usage_run_id", "run_id")],
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
    op.execute(f'DROP TABLE "{table}_unpartitioned"')


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
