"""Monthly partitions of the time-series tables, ``run_events`` and ``token_usage``.

Both are partitioned by range of ``at`` (migration ``0012_partitions``): one partition per
calendar month (UTC), ``<table>_pYYYYMM``, and ``<table>_default`` for rows of a month that
has none yet, so no write ever fails for want of a partition. ``tally db partitions``
(daily, as a job) keeps them: it creates this month's and the next ``ahead`` months'
partitions, moves rows the default partition holds into their month's new partition, and,
with a retention of N months, drops the partitions wholly older than that — writing each to
a CSV file first when given a directory. Dropping a partition is instant and leaves no
bloat, unlike deleting its rows.

Example:
    >>> partition_name("run_events", date(2026, 3, 1))
    'run_events_p202603'
    >>> months_to_drop(date(2026, 3, 15), 2, {date(2025, 12, 1), date(2026, 1, 1)})
    [datetime.date(2025, 12, 1)]
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

#: The tables partitioned by month of ``at``.
PARTITIONED = ("run_events", "token_usage")
_MONTHLY = re.compile(r"^(?P<table>[a-z_]+)_p(?P<year>\d{4})(?P<month>\d{2})$")


def month_of(day: date) -> date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def add_months(month: date, n: int) -> date:
    """The first day of the month ``n`` months after ``month`` (before, if negative)."""
    index = month.year * 12 + month.month - 1 + n
    return date(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: date) -> str:
    """The partition of ``table`` holding ``month``."""
    return f"{table}_p{month:%Y%m}"


def partition_month(name: str) -> date | None:
    """The month a monthly partition's name stands for, or None for another name."""
    m = _MONTHLY.match(name)
    return date(int(m["year"]), int(m["month"]), 1) if m else None


def is_partition(name: str) -> bool:
    """Whether a table name is a partition of a partitioned table (schema comparisons
    leave those out: the migrations declare the parents)."""
    return any(
        name == f"{t}_default" or (name.startswith(f"{t}_p") and partition_month(name))
        for t in PARTITIONED
    )


def months_to_create(today: date, ahead: int, existing: Iterable[date]) -> list[date]:
    """This month and the next ``ahead`` ones that have no partition yet."""
    have = set(existing)
    first = month_of(today)
    return [m for m in (add_months(first, i) for i in range(ahead + 1)) if m not in have]


def months_to_drop(today: date, retention_months: int, existing: Iterable[date]) -> list[date]:
    """Partitions entirely older than the last ``retention_months`` whole months before
    this one (0 keeps everything)."""
    if retention_months <= 0:
        return []
    keep_from = add_months(month_of(today), -retention_months)
    return sorted(m for m in existing if m < keep_from)


@dataclass
class Maintenance:
    """What one pass did, per table."""

    created: dict[str, list[str]] = field(default_factory=dict)
    moved_rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    exported: list[str] = field(default_factory=list)


def asyncpg_dsn(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://…``) as a libpq DSN for asyncpg."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def existing_months(conn: asyncpg.Connection, table: str) -> set[date]:
    """The months ``table`` has a partition for."""
    rows = await conn.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = $1",
        table,
    )
    return {m for r in rows if (m := partition_month(r["relname"])) is not None}


async def default_months(conn: asyncpg.Connection, table: str) -> set[date]:
    """Months of the rows waiting in ``table``'s default partition."""
    rows = await conn.fetch(
        f"SELECT DISTINCT date_trunc('month', at AT TIME ZONE 'UTC')::date AS m "
        f'FROM "{table}_default"'
    )
    return {r["m"] for r in rows}


async def create_month(conn: asyncpg.Connection, table: str, month: date) -> int:
    """Create ``month``'s partition of ``table``, moving its rows out of the default
    partition first (attaching checks the default holds none). Returns rows moved."""
    name = partition_name(table, month)
    lo = datetime(month.year, month.month, 1, tzinfo=UTC)
    hi_month = add_months(month, 1)
    hi = datetime(hi_month.year, hi_month.month, 1, tzinfo=UTC)
    async with conn.transaction():
        await conn.execute(f'CREATE TABLE "{name}" (LIKE "{table}" INCLUDING DEFAULTS)')
        moved = await conn.execute(
            f'WITH moved AS (DELETE FROM "{table}_default" WHERE at >= $1 AND at < $2 '
            f'RETURNING *) INSERT INTO "{name}" SELECT * FROM moved',
            lo,
            hi,
        )
        await conn.execute(
            f'ALTER TABLE "{table}" ATTACH PARTITION "{name}" '
            f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
        )
    return int(moved.rsplit(" ", 1)[-1])


async def drop_month(
    conn: asyncpg.Connection, table: str, month: date, export_dir: Path | None
) -> Path | None:
    """Drop ``month``'s partition of ``table``; with ``export_dir``, its rows are written
    to ``<table>_pYYYYMM.csv`` there first (a header line, then every row); the
    directory must exist."""
    name = partition_name(table, month)
    path = None
    if export_dir is not None:
        path = export_dir / f"{name}.csv"
        await conn.copy_from_table(name, output=str(path), format="csv", header=True)
    async with conn.transaction():
        await conn.execute(f'ALTER TABLE "{table}" DETACH PARTITION "{name}"')
        await conn.execute(f'DROP TABLE "{name}"')
    return path


async def maintain(
    url: str,
    *,
    ahead: int = 3,
    retention_months: int = 0,
    export_dir: Path | None = None,
    today: date | None = None,
) -> Maintenance:
    """One pass over every partitioned table: create ahead, adopt default rows, drop
    (after exporting, if asked) what retention no longer keeps."""
    today = today or datetime.now(UTC).date()
    done = Maintenance()
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for table in PARTITIONED:
            have = await existing_months(conn, table)
            wanted = set(months_to_create(today, ahead, have)) | (
                await default_months(conn, table) - have
            )
            done.created[table], done.moved_rows[table], done.dropped[table] = [], 0, []
            # Old rows waiting in the default partition get their month too, so that
            # retention drops (and exports) them like any other.
            for month in sorted(wanted):
                done.moved_rows[table] += await create_month(conn, table, month)
                done.created[table].append(partition_name(table, month))
                have.add(month)
            for month in months_to_drop(today, retention_months, have):
                path = await drop_month(conn, table, month, export_dir)
                done.dropped[table].append(partition_name(table, month))
                if path is not None:
                    done.exported.append(str(path))
    finally:
        await conn.close()
    return done


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Alembic's ``include_name`` hook: schema comparisons skip partitions."""
    return not (type_ == "table" and name is not None and is_partition(name))
