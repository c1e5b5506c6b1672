"""Where a run's rows are: ``run_spans``, the months of its events and worker calls; the
hourly token rollup found by run.

``run_events`` and ``token_usage`` are partitioned by month of ``at``; a run's id says
nothing about its time, so a lookup by run id alone asks every partition's index (13 a
year, 130 over ten years). ``run_spans`` holds, per run, the first and the last UTC month
in which either table has a row of it; a read by run id bounds ``at`` by them and
Postgres visits only those months' partitions.

Statement-level triggers with transition tables keep it, as they keep
``token_usage_hourly`` (``0010_report_indexes``): every INSERT (COPY included) or UPDATE on
either table widens the span of each run it touched, in the writer's transaction, so the
span is committed with the rows. Months, not exact times: a run's span changes only when
a row lands in a month outside it, so almost every write finds its runs covered and
writes nothing (no row lock taken, concurrent writers of one run do not wait on each
other). Runs are upserted in run id order, so two writers never lock them in opposite
orders. A span only ever widens; deleting rows (or dropping a partition) leaves it wider
than needed, never narrower.

``ix_token_usage_hourly_run_id`` lets ``GET /runs`` sum each listed run's calls from the
rollup (a row per hour of the run) instead of from every partition of ``token_usage``.

The upgrade fills ``run_spans`` from the rows already stored.

Revision ID: 0016_run_reads
Revises: 0014_console
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_run_reads"
down_revision: str | None = "0014_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("run_events", "token_usage")
MONTH = "date_trunc('month', {}, 'UTC')"


def _widen(rows: str) -> str:
    """SQL widening the spans of the runs in ``rows`` (``run_id`` and a time range,
    ``lo`` to ``hi``) to cover them; runs already covered are left alone, unlocked."""
    return f"""
        INSERT INTO run_spans AS s (run_id, first_month, last_month)
        SELECT n.run_id, n.first_month, n.last_month
        FROM (
            SELECT run_id, {MONTH.format("min(lo)")} AS first_month,
                   {MONTH.format("max(hi)")} AS last_month
            FROM {rows} GROUP BY run_id
        ) n
        LEFT JOIN run_spans o ON o.run_id = n.run_id
        WHERE o.run_id IS NULL OR n.first_month < o.first_month OR n.last_month > o.last_month
        ORDER BY n.run_id
        ON CONFLICT (run_id) DO UPDATE
        SET first_month = least(s.first_month, excluded.first_month),
            last_month = greatest(s.last_month, excluded.last_month)
    """


FUNCTION = f"""
CREATE FUNCTION run_spans_widen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_widen("(SELECT run_id, at AS lo, at AS hi FROM new_rows) AS r")};
    RETURN NULL;
END
$$;
"""

TRIGGERS = {
    "insert": "INSERT ON {table} REFERENCING NEW TABLE AS new_rows",
    "update": "UPDATE ON {table} REFERENCING NEW TABLE AS new_rows",
}


def upgrade() -> None:
    op.create_table(
        "run_spans",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("first_month", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_month", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_spans")),
        comment="writer: triggers on run_events and token_usage (tracker)",
    )
    op.execute(FUNCTION)
    for table in TABLES:
        for event, spec in TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {table}_spans_{event} AFTER {spec.format(table=table)} "
                "FOR EACH STATEMENT EXECUTE FUNCTION run_spans_widen()"
            )
    # The triggers are in place (and hold their tables against writes until commit):
    # no row is missed between the fill and the first write after it.
    stored = " UNION ALL ".join(
        f"SELECT run_id, min(at) AS lo, max(at) AS hi FROM {table} GROUP BY run_id"
        for table in TABLES
    )
    op.execute(_widen(f"({stored}) AS stored"))
    op.create_index("ix_token_usage_hourly_run_id", "token_usage_hourly", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_token_usage_hourly_run_id", table_name="token_usage_hourly")
    for table in TABLES:
        for event in TRIGGERS:
            op.execute(f"DROP TRIGGER {table}_spans_{event} ON {table}")
    op.execute("DROP FUNCTION run_spans_widen()")
    op.drop_table("run_spans")
