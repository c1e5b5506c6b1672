"""Where a run's rows are: ``run_months``, the months holding its events and worker calls;
the hourly token rollup found by run.

``run_events`` and ``token_usage`` are partitioned by month of ``at``; a run's id says
nothing of its time, so a lookup by run id alone asks every partition's index (13 a year,
130 over ten years). ``run_months`` has a row per run and UTC month in which either table
holds a row of the run; a read by run id bounds ``at`` by the run's first and last month
and Postgres visits only those months' partitions.

Statement-level triggers with transition tables keep it, as they keep
``token_usage_hourly`` (``0010_report_indexes``): every INSERT (COPY included) or UPDATE on
either table adds the (run, month) pairs of its rows that are not there yet, in the
writer's transaction, so they are committed with the rows. Append-only and without a
unique key, on purpose: a writer never updates, locks or waits for another writer's row
(the tracker's consumers write the same runs at once), so it can neither block nor
deadlock. Two writers adding the same new pair at the same moment store it twice, which
changes no run's first or last month. Almost every write finds its pairs there already
and adds nothing. Deleting rows (or dropping a partition) leaves the months wider than
needed, never narrower.

``ix_token_usage_hourly_run_id`` (made by ``0015_usage_daily``) lets ``GET /runs`` sum
each listed run's calls from the rollup (a row per hour of the run) instead of from every
partition of ``token_usage``.

The upgrade fills ``run_months`` from the rows already stored.

Revision ID: 0016_run_reads
Revises: 0015_usage_daily
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_run_reads"
down_revision: str | None = "0015_usage_daily"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("run_events", "token_usage")
MONTH = "date_trunc('month', at, 'UTC')"


def _add(rows: str) -> str:
    """SQL adding the (run, month) pairs of ``rows`` (``run_id``, ``at``) not stored yet."""
    return f"""
        INSERT INTO run_months (run_id, month)
        SELECT n.run_id, n.month
        FROM (SELECT DISTINCT run_id, {MONTH} AS month FROM {rows}) n
        WHERE NOT EXISTS (
            SELECT 1 FROM run_months m WHERE m.run_id = n.run_id AND m.month = n.month
        )
    """


FUNCTION = f"""
CREATE FUNCTION run_months_add() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    {_add("new_rows")};
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
        "run_months",
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("month", sa.DateTime(timezone=True), nullable=False),
        comment="writer: triggers on run_events and token_usage (tracker)",
    )
    op.execute(FUNCTION)
    for table in TABLES:
        for event, spec in TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {table}_months_{event} AFTER {spec.format(table=table)} "
                "FOR EACH STATEMENT EXECUTE FUNCTION run_months_add()"
            )
    # The triggers are in place and hold their tables against writes until commit: no
    # row is missed between the fill and the first write after it.
    op.execute(
        "INSERT INTO run_months (run_id, month) "
        + " UNION ".join(f"SELECT DISTINCT run_id, {MONTH} FROM {table}" for table in TABLES)
    )
    op.create_index("ix_run_months_run_id_month", "run_months", ["run_id", "month"])


def downgrade() -> None:
    for table in TABLES:
        for event in TRIGGERS:
            op.execute(f"DROP TRIGGER {table}_months_{event} ON {table}")
    op.execute("DROP FUNCTION run_months_add()")
    op.drop_table("run_months")
