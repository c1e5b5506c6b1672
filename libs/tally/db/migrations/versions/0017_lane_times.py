"""Lane times kept per task as its status changes arrive, for ``/lanes``.

``task_lanes`` holds each task's flow state (latest status, current lane, when it came into
it, hours of its closed stints per lane), ``task_lane_times`` each lane a task has left
(its hours there, when it last left it) and ``task_lane_exits`` every move out of a lane;
``task_lane_days`` sums both per UTC day, workspace and lane: the moves out, and the hours
of the tasks that left it that day, sorted (the same values, so a window's percentiles
stay exact), so a window reads a row per day and lane and only its first, partial day
from the rows per task.
Statement triggers on ``task_status_events`` rebuild the rows of every task a statement
touched from that task's whole history, so late, out-of-order, updated and deleted moves
leave the same rows as moves stored in order; the rules are ``services.reporter.lanes``'.

Writers of the same task take turns: a statement of up to ``BULK`` tasks takes the task
locks the tracker takes (``hashtextextended(task_id, 1130)``), a larger one the whole
table, and the rows are rebuilt after the lock, from what has been committed by then. The
day totals then take the difference between those tasks' rows before and after, as
upserts of the changed days in key order (so writers of other tasks on the same days add
up, and never wait for each other in a cycle within a statement). A writer storing moves
in several statements of one transaction should take its tasks' turns first, as the
tracker does (else two such writers can deadlock, and Postgres cancels one).

Revision ID: 0017_lane_times
Revises: 0016_run_reads
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0017_lane_times"
down_revision: str | None = "0016_run_reads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Above this many tasks in one statement (a tracker batch: 256 moves), the rebuild locks
#: the table, not each task: the server's lock table is shared by every session and holds
#: a few thousand locks in all.
BULK = 256

LANE = (
    "CASE {c} WHEN 'in_progress' THEN 'work' WHEN 'ready_to_review' THEN 'review' "
    "WHEN 'ready_to_qa' THEN 'qa' END"
)


def _lane(column: str) -> str:
    return LANE.format(c=column)


def _hours(where: str) -> str:
    return (
        f"coalesce(sum(extract(epoch FROM ended - changed_at)) FILTER (WHERE {where}), 0)"
        "::float8 / 3600"
    )


#: Columns of the kept rows past their keys, in table order.
TASK_COLUMNS = (
    "workspace", "first_at", "last_at", "last_status", "lane", "blocked", "entered_at",
    "work_hours", "review_hours", "qa_hours", "blocked_hours",
)  # fmt: skip
TIME_COLUMNS = ("workspace", "hours", "left_at")
EXIT_COLUMNS = ("task_id", "workspace", "lane", "at")


def _set(columns: Sequence[str]) -> str:
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


def _changed(columns: Sequence[str]) -> str:
    mine = ", ".join(f"o.{c}" for c in columns)
    theirs = ", ".join(f"excluded.{c}" for c in columns)
    return f"({mine}) IS DISTINCT FROM ({theirs})"


#: Rebuilds the rows of the tasks in ``ids`` from their moves (the caller holds their turn).
REBUILD = f"""
CREATE FUNCTION task_lanes_rebuild(ids text[]) RETURNS void LANGUAGE sql AS $$
WITH e AS MATERIALIZED (
    SELECT task_id, workspace, event_id, to_status, changed_at,
           {_lane("to_status")} AS lane,
           CASE WHEN to_status = 'blocked' THEN 'blocked' ELSE {_lane("to_status")} END AS bucket,
           lead(changed_at) OVER w AS ended,
           row_number() OVER w AS pos
    FROM task_status_events WHERE task_id = ANY(ids)
    WINDOW w AS (PARTITION BY task_id ORDER BY changed_at, event_id)
), t AS (
    SELECT task_id,
           (array_agg(workspace ORDER BY pos DESC))[1] AS workspace,
           min(changed_at) AS first_at, max(changed_at) AS last_at,
           (array_agg(to_status ORDER BY pos DESC))[1] AS last_status,
           (array_agg(lane ORDER BY pos DESC) FILTER (WHERE to_status <> 'blocked'))[1]
               AS last_lane,
           {_hours("bucket = 'work'")} AS work_hours,
           {_hours("bucket = 'review'")} AS review_hours,
           {_hours("bucket = 'qa'")} AS qa_hours,
           {_hours("bucket = 'blocked'")} AS blocked_hours
    FROM e GROUP BY task_id
), c AS (
    SELECT t.*, last_status = 'blocked' AS blocked,
           CASE WHEN last_status = 'blocked' THEN last_lane
                ELSE {_lane("last_status")} END AS lane
    FROM t
), entered AS (
    -- the task came into its lane right after its last move to any other status but a block
    SELECT e.task_id,
           (array_agg(e.changed_at ORDER BY e.pos))[
               coalesce(max(e.pos) FILTER (
                   WHERE e.to_status <> 'blocked' AND e.lane IS DISTINCT FROM c.lane), 0) + 1
           ] AS entered_at
    FROM e JOIN c USING (task_id) WHERE c.lane IS NOT NULL GROUP BY e.task_id
), new_tasks AS (
    SELECT c.task_id, c.workspace, c.first_at, c.last_at, c.last_status, c.lane, c.blocked,
           entered.entered_at, c.work_hours, c.review_hours, c.qa_hours, c.blocked_hours
    FROM c LEFT JOIN entered USING (task_id)
), new_times AS (
    -- a lane the task has left (its current lane, and its block while blocked, are not)
    SELECT e.task_id, e.bucket, c.workspace,
           sum(extract(epoch FROM e.ended - e.changed_at))::float8 / 3600 AS hours,
           max(e.ended) AS left_at
    FROM e JOIN c USING (task_id)
    WHERE e.ended IS NOT NULL AND e.bucket IS NOT NULL AND e.bucket IS DISTINCT FROM c.lane
          AND NOT (e.bucket = 'blocked' AND c.blocked)
    GROUP BY e.task_id, e.bucket, c.workspace
), moves AS (
    -- leaving a lane through a block counts when the task moves on to another status
    SELECT event_id, task_id, workspace, changed_at, lane,
           lag(lane) OVER (PARTITION BY task_id ORDER BY pos) AS previous
    FROM e WHERE to_status <> 'blocked'
), new_exits AS (
    SELECT event_id, task_id, workspace, previous AS lane, changed_at AS at FROM moves
    WHERE previous IS NOT NULL AND lane IS DISTINCT FROM previous
-- Only rows that changed are written: a new move mostly adds a row or two per task.
), tasks_set AS (
    INSERT INTO task_lanes AS o (task_id, {", ".join(TASK_COLUMNS)})
    SELECT * FROM new_tasks ORDER BY last_at  -- rows of a window lie together
    ON CONFLICT (task_id) DO UPDATE SET {_set(TASK_COLUMNS)}
    WHERE {_changed(TASK_COLUMNS)}
), tasks_gone AS (
    DELETE FROM task_lanes o WHERE task_id = ANY(ids)
        AND NOT EXISTS (SELECT FROM new_tasks n WHERE n.task_id = o.task_id)
), times_set AS (
    INSERT INTO task_lane_times AS o (task_id, bucket, {", ".join(TIME_COLUMNS)})
    SELECT * FROM new_times ORDER BY left_at
    ON CONFLICT (task_id, bucket) DO UPDATE SET {_set(TIME_COLUMNS)}
    WHERE {_changed(TIME_COLUMNS)}
), times_gone AS (
    DELETE FROM task_lane_times o WHERE task_id = ANY(ids)
        AND NOT EXISTS (SELECT FROM new_times n WHERE (n.task_id, n.bucket) = (o.task_id, o.bucket))
), exits_set AS (
    INSERT INTO task_lane_exits AS o (event_id, {", ".join(EXIT_COLUMNS)})
    SELECT * FROM new_exits ORDER BY at
    ON CONFLICT (event_id) DO UPDATE SET {_set(EXIT_COLUMNS)}
    WHERE {_changed(EXIT_COLUMNS)}
)
DELETE FROM task_lane_exits o WHERE task_id = ANY(ids)
    AND NOT EXISTS (SELECT FROM new_exits n WHERE n.event_id = o.event_id);
$$;
"""

#: The UTC day a time falls in.
DAY = "date_bin('1 day', {t}, TIMESTAMPTZ '2000-01-01 00:00:00+00')"

#: Rebuilds the day totals of the (day, workspace) pairs given (the caller holds them).
REBUILD_DAYS = """
CREATE FUNCTION task_lane_days_rebuild(days timestamptz[], spaces text[]) RETURNS void
LANGUAGE sql AS $$
DELETE FROM task_lane_days d USING unnest(days, spaces) AS k(day, workspace)
WHERE d.day = k.day AND d.workspace = k.workspace;
WITH k AS (
    SELECT DISTINCT day, workspace FROM unnest(days, spaces) AS k(day, workspace)
), t AS (
    SELECT k.day, k.workspace, lt.bucket, array_agg(lt.hours ORDER BY lt.hours) AS hours
    FROM k JOIN task_lane_times lt ON lt.workspace = k.workspace
        AND lt.left_at >= k.day AND lt.left_at < k.day + interval '1 day'
    GROUP BY 1, 2, 3
), x AS (
    SELECT k.day, k.workspace, e.lane AS bucket, count(*) AS exits
    FROM k JOIN task_lane_exits e ON e.workspace = k.workspace
        AND e.at >= k.day AND e.at < k.day + interval '1 day'
    GROUP BY 1, 2, 3
)
INSERT INTO task_lane_days (day, workspace, bucket, exits, hours)
SELECT day, workspace, bucket, coalesce(x.exits, 0), coalesce(t.hours, '{}')
FROM t FULL JOIN x USING (day, workspace, bucket)
ORDER BY day, workspace, bucket;
$$;
"""

KEY = "day, workspace, bucket"

#: Changes to the day totals once a statement's tasks are rebuilt: their rows before
#: (``gone_*``, one element per row) and after, summed per day, workspace and lane; the
#: days that did not change are left alone.
DELTA = f"""
    gone AS (
        SELECT * FROM unnest(gone_days, gone_spaces, gone_buckets, gone_hours)
            AS g(day, workspace, bucket, hours)
    ), came AS (
        SELECT {DAY.format(t="left_at")} AS day, workspace, bucket, hours
        FROM task_lane_times WHERE task_id = ANY(ids)
    ), exits_gone AS (
        SELECT day, workspace, bucket, count(*) AS n
        FROM unnest(left_days, left_spaces, left_lanes) AS x(day, workspace, bucket)
        GROUP BY {KEY}
    ), exits_came AS (
        SELECT {DAY.format(t="at")} AS day, workspace, lane AS bucket, count(*) AS n
        FROM task_lane_exits WHERE task_id = ANY(ids) GROUP BY {KEY}
    ), delta AS (
        SELECT {KEY}, coalesce(ec.n, 0) - coalesce(eg.n, 0) AS exits,
               coalesce(c.hours, '{{}}') AS came, coalesce(g.hours, '{{}}') AS gone
        FROM (SELECT {KEY} FROM gone UNION SELECT {KEY} FROM came
              UNION SELECT {KEY} FROM exits_gone UNION SELECT {KEY} FROM exits_came) k
        LEFT JOIN (SELECT {KEY}, array_agg(hours ORDER BY hours) AS hours FROM came
                   GROUP BY {KEY}) c USING ({KEY})
        LEFT JOIN (SELECT {KEY}, array_agg(hours ORDER BY hours) AS hours FROM gone
                   GROUP BY {KEY}) g USING ({KEY})
        LEFT JOIN exits_came ec USING ({KEY})
        LEFT JOIN exits_gone eg USING ({KEY})
    ), changed AS (
        SELECT * FROM delta WHERE exits <> 0 OR came IS DISTINCT FROM gone
    )"""


def _refresh(name: str, setting: str) -> str:
    """A function applying a statement's tasks to the kept rows (the caller holds them)."""
    return f"""
CREATE FUNCTION {name}(ids text[]) RETURNS void LANGUAGE plpgsql {setting} AS $$
DECLARE
    gone_days timestamptz[];
    gone_spaces text[];
    gone_buckets text[];
    gone_hours float8[];
    left_days timestamptz[];
    left_spaces text[];
    left_lanes text[];
BEGIN
    -- Read committed: each statement from here sees what was committed up to its start,
    -- including the moves of any writer that held these tasks before us. What these
    -- tasks' rows were, for the day totals they leave:
    SELECT array_agg({DAY.format(t="left_at")}), array_agg(workspace), array_agg(bucket),
           array_agg(hours)
    INTO gone_days, gone_spaces, gone_buckets, gone_hours
    FROM task_lane_times WHERE task_id = ANY(ids);
    SELECT array_agg({DAY.format(t="at")}), array_agg(workspace), array_agg(lane)
    INTO left_days, left_spaces, left_lanes
    FROM task_lane_exits WHERE task_id = ANY(ids);
    PERFORM task_lanes_rebuild(ids);
    -- The day totals take the difference: first what left each changed day (every one
    -- of them, in key order: concurrent writers lock them in the same order), then what
    -- came. The upserts work on the latest committed totals, so writers of other tasks
    -- on the same days add up.
    WITH {DELTA.strip()}
    INSERT INTO task_lane_days AS d ({KEY}, exits, hours)
    -- (a new row's ``gone`` is empty: only a stored row's hours can leave)
    SELECT {KEY}, exits, gone FROM changed ORDER BY {KEY}
    ON CONFLICT ({KEY}) DO UPDATE SET
        exits = d.exits + excluded.exits,
        hours = (SELECT coalesce(array_agg(h ORDER BY h), '{{}}') FROM (
            SELECT unnest(d.hours) EXCEPT ALL SELECT unnest(excluded.hours)
        ) left_over(h));
    WITH {DELTA.strip()}
    UPDATE task_lane_days d SET hours = (
        SELECT array_agg(h ORDER BY h) FROM (
            SELECT unnest(d.hours) UNION ALL SELECT unnest(c.came)
        ) merged(h))
    FROM changed c
    WHERE (c.day, c.workspace, c.bucket) = (d.day, d.workspace, d.bucket)
          AND cardinality(c.came) > 0;
    -- a day and lane left with nothing has no row (as a rebuild from scratch leaves it)
    DELETE FROM task_lane_days d USING (
        SELECT * FROM unnest(gone_days, gone_spaces, gone_buckets) AS g(day, workspace, bucket)
        UNION
        SELECT * FROM unnest(left_days, left_spaces, left_lanes) AS x(day, workspace, bucket)
    ) g
    WHERE (g.day, g.workspace, g.bucket) = (d.day, d.workspace, d.bucket)
          AND d.exits = 0 AND d.hours = '{{}}';
END
$$;
"""


#: Two copies of one body: plpgsql keeps each function's plans, made once per session
#: without knowing how many tasks ``ids`` holds. A statement's few tasks are read through
#: their indexes; a bulk load's many are joined by hashing (a COPY into tables without
#: statistics yet got nested loops: 80,000 moves took 89 s instead of 7).
REFRESH = (
    _refresh("task_lanes_refresh_few", "SET enable_seqscan = off"),
    _refresh("task_lanes_refresh_many", "SET enable_nestloop = off"),
)

APPLY = f"""
CREATE FUNCTION task_lanes_apply() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    ids text[];
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE task_lane_days, task_lane_times, task_lane_exits, task_lanes;
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        SELECT array_agg(DISTINCT task_id ORDER BY task_id) INTO ids FROM new_rows;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT array_agg(DISTINCT task_id ORDER BY task_id) INTO ids FROM old_rows;
    ELSE
        SELECT array_agg(DISTINCT task_id ORDER BY task_id) INTO ids
        FROM (SELECT task_id FROM new_rows UNION SELECT task_id FROM old_rows) moved;
    END IF;
    IF ids IS NULL THEN
        RETURN NULL;  -- nothing stored (a redelivered move skipped by ON CONFLICT)
    END IF;
    IF cardinality(ids) > {BULK} THEN
        LOCK TABLE task_lanes IN SHARE ROW EXCLUSIVE MODE;
        PERFORM task_lanes_refresh_many(ids);
    ELSE
        PERFORM pg_advisory_xact_lock(hashtextextended(id, 1130))
        FROM (SELECT id FROM unnest(ids) AS id ORDER BY id) ordered;
        -- wait for a bulk writer holding the table, so the rebuild sees its moves
        LOCK TABLE task_lanes IN ROW EXCLUSIVE MODE;
        PERFORM task_lanes_refresh_few(ids);
    END IF;
    RETURN NULL;
END
$$;
"""

TRIGGERS = {
    "insert": "INSERT ON task_status_events REFERENCING NEW TABLE AS new_rows",
    "update": (
        "UPDATE ON task_status_events REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"
    ),
    "delete": "DELETE ON task_status_events REFERENCING OLD TABLE AS old_rows",
}


def upgrade() -> None:
    op.create_table(
        "task_lanes",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("first_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status", sa.String(32), nullable=False),
        sa.Column("lane", sa.String(16)),
        sa.Column("blocked", sa.Boolean(), nullable=False),
        sa.Column("entered_at", sa.DateTime(timezone=True)),
        sa.Column("work_hours", sa.Float(), nullable=False),
        sa.Column("review_hours", sa.Float(), nullable=False),
        sa.Column("qa_hours", sa.Float(), nullable=False),
        sa.Column("blocked_hours", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_lanes")),
        comment="writer: triggers on task_status_events (tracker)",
    )
    op.create_index(
        "ix_task_lanes_last_at", "task_lanes", ["last_at"], postgresql_include=["first_at"]
    )
    op.create_index(
        "ix_task_lanes_workspace_last_at",
        "task_lanes",
        ["workspace", "last_at"],
        postgresql_include=["first_at"],
    )
    op.create_index("ix_task_lanes_first_at", "task_lanes", ["first_at"])
    op.create_index("ix_task_lanes_workspace_first_at", "task_lanes", ["workspace", "first_at"])
    op.create_index(
        "ix_task_lanes_last_status_workspace", "task_lanes", ["last_status", "workspace"]
    )
    op.create_table(
        "task_lane_times",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("hours", sa.Float(), nullable=False),
        sa.Column("left_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "bucket", name=op.f("pk_task_lane_times")),
        comment="writer: triggers on task_status_events (tracker)",
    )
    op.create_index(
        "ix_task_lane_times_left_at",
        "task_lane_times",
        ["left_at"],
        postgresql_include=["bucket", "hours"],
    )
    op.create_index(
        "ix_task_lane_times_workspace_left_at",
        "task_lane_times",
        ["workspace", "left_at"],
        postgresql_include=["bucket", "hours"],
    )
    op.create_table(
        "task_lane_exits",
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("lane", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_task_lane_exits")),
        comment="writer: triggers on task_status_events (tracker)",
    )
    op.create_index("ix_task_lane_exits_task_id", "task_lane_exits", ["task_id"])
    op.create_index("ix_task_lane_exits_at", "task_lane_exits", ["at"], postgresql_include=["lane"])
    op.create_index(
        "ix_task_lane_exits_workspace_at",
        "task_lane_exits",
        ["workspace", "at"],
        postgresql_include=["lane"],
    )
    op.create_table(
        "task_lane_days",
        sa.Column("day", sa.DateTime(timezone=True), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("exits", sa.BigInteger(), nullable=False),
        sa.Column("hours", postgresql.ARRAY(sa.Float()), nullable=False),
        sa.PrimaryKeyConstraint("day", "workspace", "bucket", name=op.f("pk_task_lane_days")),
        comment="writer: triggers on task_status_events (tracker)",
    )
    op.create_index("ix_task_lane_days_workspace_day", "task_lane_days", ["workspace", "day"])
    for table in ("task_lanes", "task_lane_times", "task_lane_exits", "task_lane_days"):
        # Every move rewrites its task's rows: vacuum them often enough that the windows
        # are read from their indexes alone.
        op.execute(
            f"ALTER TABLE {table} SET (autovacuum_vacuum_scale_factor = 0.05, "
            "autovacuum_vacuum_insert_scale_factor = 0.05)"
        )
    op.execute(REBUILD)
    op.execute(REBUILD_DAYS)
    for refresh in REFRESH:
        op.execute(refresh)
    op.execute(APPLY)
    # Writers wait for the backfill; the moves already stored are rebuilt in one pass.
    op.execute("LOCK TABLE task_status_events IN SHARE MODE")
    for event, spec in TRIGGERS.items():
        op.execute(
            f"CREATE TRIGGER task_lanes_{event} AFTER {spec} "
            "FOR EACH STATEMENT EXECUTE FUNCTION task_lanes_apply()"
        )
    op.execute(
        "CREATE TRIGGER task_lanes_truncate AFTER TRUNCATE ON task_status_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION task_lanes_apply()"
    )
    op.execute("SELECT task_lanes_rebuild(array_agg(DISTINCT task_id)) FROM task_status_events")
    op.execute(
        "SELECT task_lane_days_rebuild(array_agg(day), array_agg(workspace)) FROM ("
        f"SELECT DISTINCT {DAY.format(t='changed_at')} AS day, workspace "
        "FROM task_status_events) k"
    )
    op.execute("ANALYZE task_lanes, task_lane_times, task_lane_exits, task_lane_days")


def downgrade() -> None:
    for event in (*TRIGGERS, "truncate"):
        op.execute(f"DROP TRIGGER task_lanes_{event} ON task_status_events")
    op.execute("DROP FUNCTION task_lanes_apply()")
    op.execute("DROP FUNCTION task_lanes_refresh_few(text[])")
    op.execute("DROP FUNCTION task_lanes_refresh_many(text[])")
    op.execute("DROP FUNCTION task_lane_days_rebuild(timestamptz[], text[])")
    op.execute("DROP FUNCTION task_lanes_rebuild(text[])")
    for table in ("task_lane_days", "task_lane_exits", "task_lane_times", "task_lanes"):
        op.drop_table(table)
