"""Token use per UTC day by what a run is known by (agent, subscription, command), kept by
triggers on ``token_usage``, ``runs`` and ``assignments``.

``token_usage_daily`` sums ``token_usage`` per UTC day, workspace, the run's agent, the
subscription of the run's assignment, the command (the call's, else the run's), model and
provider: a few rows per day whatever the number of runs, so ``/tokens`` by agent, command,
model or provider and ``/dashboard/series`` read whole days of a window without joining
every run of it. The figures a day holds are exactly those of joining its ``token_usage``
rows to ``runs`` and ``assignments`` as they stand, because every write that changes either
side moves them:

- a statement on ``token_usage`` adds (and takes away) its rows' figures under their run's
  attributes as stored then;
- a statement on ``runs`` that gives a run, or changes, its agent, command or assignment
  moves the run's figures (from ``token_usage_hourly``) from the old attributes to the new;
- a statement on ``assignments`` that stores or changes a subscription moves the figures of
  the runs given that assignment.

A run row and its first worker calls are written at the same time by separate
transactions: each would miss the other's uncommitted rows, and the calls would stay
under no agent. So every trigger first takes transaction-scoped advisory locks on the run
ids it reads or moves (and on the assignment ids where assignments are read), by slot of
their hash (``LOCK_SLOTS``), in one order for every trigger; the statements after them see
what the previous holder committed (READ COMMITTED: each statement of a volatile function
takes a fresh snapshot). The assignments trigger finds the runs of its assignments once
it holds the assignments' locks, then locks those runs: still in the one order.

The upgrade fills the rollup from ``token_usage_hourly`` (a row per run and hour, not per
call).

Revision ID: 0015_usage_daily
Revises: 0014_console
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015_usage_daily"
down_revision: str | None = "0014_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEY = "day, workspace, agent_id, subscription, command, model, provider"
#: What each counter sums over signed rows (``s`` is +1 for a row added, -1 taken away):
#: over ``token_usage`` rows, and over ``token_usage_hourly`` rows.
RAW = {
    "calls": "sum(s)",
    "input_tokens": "sum(s * input_tokens)",
    "output_tokens": "sum(s * output_tokens)",
    "cache_read_tokens": "sum(s * cache_read_tokens)",
    "cache_write_tokens": "sum(s * cache_write_tokens)",
    "reasoning_tokens": "sum(s * reasoning_tokens)",
    "cost_micros": "coalesce(sum(s * cost_micros), 0)",
    "unpriced_calls": "coalesce(sum(s) FILTER (WHERE NOT cost_known), 0)",
    "duration_ms": "coalesce(sum(s * duration_ms), 0)",
}
HOURLY = {c: f"sum(s * {c})" for c in RAW}
DAY = "date_bin('1 day', {at}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
#: Advisory locks are taken per slot of a run or assignment id's hash, not per id: a bulk
#: write (a restore, a COPY of a year of calls) takes at most ``LOCK_SLOTS`` of each, where
#: a lock per run would fill Postgres's shared lock table (a few thousand entries for all
#: sessions). Writers of unrelated runs sharing a slot wait for each other; concurrent
#: writers of calls mostly wait anyway, on the same day's rollup rows.
LOCK_SLOTS = 256
#: (class, slot) of a lock; every trigger takes assignments' (class 1515) before runs' (1516)
#: and each class in slot order: one order for all, so the locks never deadlock.
ASSIGNMENT_LOCK = f"1515, hashtext({{id}}) & {LOCK_SLOTS - 1}"
RUN_LOCK = f"1516, hashtext({{id}}) & {LOCK_SLOTS - 1}"


def _upsert(select: str) -> str:
    """Add the grouped figures of ``select`` (rows in key order) to the rollup."""
    sets = ", ".join(f"{c} = d.{c} + excluded.{c}" for c in RAW)
    return (
        f"INSERT INTO token_usage_daily AS d ({KEY}, {', '.join(RAW)}) {select} "
        f"ON CONFLICT ({KEY}) DO UPDATE SET {sets};"
    )


def _lock(keys: str) -> str:
    """Take the advisory locks of ``keys`` (a query of (class, slot) pairs), in order, once
    each."""
    return (
        "PERFORM pg_advisory_xact_lock(c, s) "
        f"FROM (SELECT DISTINCT c, s FROM ({keys}) ks(c, s) ORDER BY c, s) o;"
    )


# -- token_usage ----------------------------------------------------------------------------


def _calls(rows: str, sign: int) -> str:
    return (
        f"SELECT {sign} AS s, run_id, workspace, model, provider, command, input_tokens, "
        "output_tokens, cache_read_tokens, cache_write_tokens, reasoning_tokens, cost_micros, "
        f"cost_known, duration_ms, at FROM {rows}"
    )


def _apply_calls(*signed: tuple[str, int]) -> str:
    rows = " UNION ALL ".join(_calls(r, s) for r, s in signed)
    runs = " UNION ".join(f"SELECT run_id FROM {r}" for r, _ in signed)
    # Summed per run first: a run's attributes are looked up once, not once per call.
    per_run = (
        f"SELECT run_id, {DAY.format(at='at')} AS day, workspace, model, provider, command, "
        + ", ".join(f"{expr} AS {c}" for c, expr in RAW.items())
        + f" FROM ({rows}) u GROUP BY 1, 2, 3, 4, 5, 6"
    )
    return (
        _lock(f"SELECT {RUN_LOCK.format(id='run_id')} FROM ({runs}) ids")
        + "\n"
        + _upsert(
            "SELECT u.day, u.workspace, r.agent_id, a.subscription, "
            "coalesce(u.command, r.command), u.model, u.provider, "
            + ", ".join(f"sum(u.{c})" for c in RAW)
            + f" FROM ({per_run}) u LEFT JOIN runs r ON r.run_id = u.run_id "
            "LEFT JOIN assignments a ON a.assignment_id = r.assignment_id "
            "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7"
        )
    )


CALLS_FUNCTION = f"""
CREATE FUNCTION token_usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_apply_calls(("new_rows", 1))}
    ELSIF TG_OP = 'UPDATE' THEN
        {_apply_calls(("old_rows", -1), ("new_rows", 1))}
    ELSE
        {_apply_calls(("old_rows", -1))}
    END IF;
    RETURN NULL;
END
$$;
"""

# -- runs and assignments: move a run's figures to its new attributes -------------------------


def _move(moved: str) -> str:
    """Move the hourly figures of the runs of ``moved`` (rows of ``run_id`` and, before and
    after, ``agent_id``, ``command`` and ``subscription``) from before to after."""
    sums = ", ".join(HOURLY.values())
    signed = (
        f"SELECT -1 AS s, run_id, old_agent AS agent_id, old_command AS command, "
        f"old_subscription AS subscription FROM ({moved}) m UNION ALL "
        f"SELECT 1, run_id, new_agent, new_command, new_subscription FROM ({moved}) m"
    )
    return _upsert(
        f"SELECT {DAY.format(at='h.hour')}, h.workspace, m.agent_id, m.subscription, "
        f"coalesce(h.command, m.command), h.model, h.provider, {sums} "
        f"FROM ({signed}) m JOIN token_usage_hourly h ON h.run_id = m.run_id "
        "GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 5, 6, 7"
    )


RUN_ATTRIBUTES = ("agent_id", "command", "assignment_id")


def _runs_changed(old: str | None, new: str | None) -> str:
    """Runs whose attributes a statement changed, before and after (NULL: no row)."""
    cols = ", ".join(("run_id", *RUN_ATTRIBUTES))
    nothing = f"SELECT {cols} FROM runs WHERE false"
    o = f"SELECT {cols} FROM {old}" if old else nothing
    n = f"SELECT {cols} FROM {new}" if new else nothing
    differ = " OR ".join(f"o.{c} IS DISTINCT FROM n.{c}" for c in RUN_ATTRIBUTES)
    return (
        "SELECT coalesce(o.run_id, n.run_id) AS run_id, "
        "o.agent_id AS old_agent, o.command AS old_command, o.assignment_id AS old_assignment, "
        "n.agent_id AS new_agent, n.command AS new_command, n.assignment_id AS new_assignment "
        f"FROM ({o}) o FULL JOIN ({n}) n ON o.run_id = n.run_id "
        f"WHERE o.run_id IS NULL OR n.run_id IS NULL OR {differ}"
    )


def _apply_runs(old: str | None, new: str | None) -> str:
    changed = _runs_changed(old, new)
    keys = (
        f"SELECT {RUN_LOCK.format(id='run_id')} FROM ({changed}) c UNION ALL "
        f"SELECT {ASSIGNMENT_LOCK.format(id='old_assignment')} FROM ({changed}) c "
        "WHERE old_assignment IS NOT NULL UNION ALL "
        f"SELECT {ASSIGNMENT_LOCK.format(id='new_assignment')} FROM ({changed}) c "
        "WHERE new_assignment IS NOT NULL"
    )
    moved = (
        "SELECT c.run_id, c.old_agent, c.old_command, oa.subscription AS old_subscription, "
        "c.new_agent, c.new_command, na.subscription AS new_subscription "
        f"FROM ({changed}) c "
        "LEFT JOIN assignments oa ON oa.assignment_id = c.old_assignment "
        "LEFT JOIN assignments na ON na.assignment_id = c.new_assignment"
    )
    return _lock(keys) + "\n" + _move(moved)


RUNS_FUNCTION = f"""
CREATE FUNCTION runs_usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_apply_runs(None, "new_rows")}
    ELSIF TG_OP = 'UPDATE' THEN
        {_apply_runs("old_rows", "new_rows")}
    ELSE
        {_apply_runs("old_rows", None)}
    END IF;
    RETURN NULL;
END
$$;
"""


def _assignments_changed(old: str | None, new: str | None) -> str:
    nothing = "SELECT assignment_id, subscription FROM assignments WHERE false"
    o = f"SELECT assignment_id, subscription FROM {old}" if old else nothing
    n = f"SELECT assignment_id, subscription FROM {new}" if new else nothing
    return (
        "SELECT coalesce(o.assignment_id, n.assignment_id) AS assignment_id, "
        "o.subscription AS old_subscription, n.subscription AS new_subscription "
        f"FROM ({o}) o FULL JOIN ({n}) n ON o.assignment_id = n.assignment_id "
        "WHERE o.subscription IS DISTINCT FROM n.subscription"
    )


def _apply_assignments(old: str | None, new: str | None) -> str:
    changed = _assignments_changed(old, new)
    their_runs = (
        f"SELECT r.run_id FROM ({changed}) c JOIN runs r ON r.assignment_id = c.assignment_id"
    )
    moved = (
        "SELECT r.run_id, r.agent_id AS old_agent, r.command AS old_command, "
        "c.old_subscription, r.agent_id AS new_agent, r.command AS new_command, "
        f"c.new_subscription FROM ({changed}) c "
        "JOIN runs r ON r.assignment_id = c.assignment_id"
    )
    return (
        _lock(f"SELECT {ASSIGNMENT_LOCK.format(id='assignment_id')} FROM ({changed}) c")
        + "\n"
        + _lock(f"SELECT {RUN_LOCK.format(id='run_id')} FROM ({their_runs}) r")
        + "\n"
        + _move(moved)
    )


ASSIGNMENTS_FUNCTION = f"""
CREATE FUNCTION assignments_usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        {_apply_assignments(None, "new_rows")}
    ELSIF TG_OP = 'UPDATE' THEN
        {_apply_assignments("old_rows", "new_rows")}
    ELSE
        {_apply_assignments("old_rows", None)}
    END IF;
    RETURN NULL;
END
$$;
"""

#: (table, function) of each trigger set.
TRIGGERED = {
    "token_usage": "token_usage_daily_apply",
    "runs": "runs_usage_daily_apply",
    "assignments": "assignments_usage_daily_apply",
}
SPECS = {
    "insert": "INSERT ON {t} REFERENCING NEW TABLE AS new_rows",
    "update": "UPDATE ON {t} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "delete": "DELETE ON {t} REFERENCING OLD TABLE AS old_rows",
}

#: A condition that is always true and keeps its query off parallel workers (a parallel
#: unsafe function anywhere in a query makes Postgres plan all of it serially). The
#: reporter's rollup reads add it: a window's rollup rows are a few thousand, and two
#: workers took longer to start (milliseconds, more on a busy machine) than the read;
#: a ``SET LOCAL`` instead costs a round trip per read.
SERIAL_PLAN = """
CREATE FUNCTION tally_serial_plan() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL UNSAFE AS $$ BEGIN RETURN true; END $$;
"""

BACKFILL = _upsert(
    f"SELECT {DAY.format(at='h.hour')}, h.workspace, r.agent_id, a.subscription, "
    "coalesce(h.command, r.command), h.model, h.provider, "
    + ", ".join(f"sum({c})" for c in RAW)
    + " FROM token_usage_hourly h LEFT JOIN runs r ON r.run_id = h.run_id "
    "LEFT JOIN assignments a ON a.assignment_id = r.assignment_id "
    "GROUP BY 1, 2, 3, 4, 5, 6, 7"
)


def upgrade() -> None:
    op.create_table(
        "token_usage_daily",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(128)),
        sa.Column("subscription", sa.String(64)),
        sa.Column("command", sa.String(128)),
        sa.Column("model", sa.String(128)),
        sa.Column("provider", sa.String(64)),
        *(sa.Column(c, sa.BigInteger(), nullable=False) for c in RAW if c != "duration_ms"),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        comment="writer: triggers on token_usage, runs and assignments",
    )
    op.create_index(
        "ux_token_usage_daily_key",
        "token_usage_daily",
        KEY.split(", "),
        unique=True,
        postgresql_nulls_not_distinct=True,
    )
    op.create_index("ix_token_usage_daily_workspace_day", "token_usage_daily", ["workspace", "day"])
    # A run's hourly rows (moved when its attributes change); the runs of an assignment.
    op.create_index("ix_token_usage_hourly_run_id", "token_usage_hourly", ["run_id"])
    op.create_index("ix_runs_assignment_id", "runs", ["assignment_id"])
    op.execute(SERIAL_PLAN)
    for table, function in TRIGGERED.items():
        op.execute(
            {
                "token_usage": CALLS_FUNCTION,
                "runs": RUNS_FUNCTION,
                "assignments": ASSIGNMENTS_FUNCTION,
            }[table]
        )
        for event, spec in SPECS.items():
            op.execute(
                f"CREATE TRIGGER {table}_daily_{event} AFTER {spec.format(t=table)} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION {function}()"
            )
    op.execute(BACKFILL)
    # Statistics now, not at autovacuum's next pass: a window's plan needs them.
    op.execute("ANALYZE token_usage_daily")


def downgrade() -> None:
    for table, function in TRIGGERED.items():
        for event in SPECS:
            op.execute(f"DROP TRIGGER {table}_daily_{event} ON {table}")
        op.execute(f"DROP FUNCTION {function}()")
    op.execute("DROP FUNCTION tally_serial_plan()")
    op.drop_index("ix_runs_assignment_id", table_name="runs")
    op.drop_index("ix_token_usage_hourly_run_id", table_name="token_usage_hourly")
    op.drop_table("token_usage_daily")
