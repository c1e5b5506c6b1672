"""The tracker's queries. It is the only writer of tasks, runs, run_events, token_usage
and task_status_events."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import Table, Text, TextClause, bindparam, func, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from services.tracker import facts
from services.tracker.totals import SubtaskMark, UsageRow
from services.tracker.writing import WritingIds
from tally import metrics
from tally.db.partitions import PARTITIONED
from tally.db.tables import run_events, runs, task_status_events, tasks, token_usage
from tally.events import RunFinished


@functools.cache
def _insert_unnested(table: Table) -> TextClause:
    """``INSERT … SELECT … FROM unnest(one array per column) ON CONFLICT DO NOTHING``: a
    batch in one statement whose text never changes (prepared once, whatever the batch's
    size). JSONB values travel as JSON text."""
    names = [c.name for c in table.columns]
    json_cols = {c.name for c in table.columns if isinstance(c.type, JSONB)}
    picked = ", ".join(f"{n}::jsonb" if n in json_cols else n for n in names)
    sql = (
        f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {picked} "
        f"FROM unnest({', '.join(':' + n for n in names)}) AS u({', '.join(names)}) "
        "ON CONFLICT DO NOTHING"
    )
    return text(sql).bindparams(
        *(
            bindparam(c.name, type_=ARRAY(Text if c.name in json_cols else c.type))
            for c in table.columns
        )
    )


async def insert_ignore(
    conn: AsyncConnection, table: Any, rows: Sequence[dict[str, Any]], *, at_once: bool = False
) -> int:
    """Insert rows, skipping those whose key exists (redeliveries). Returns rows inserted.

    ``at_once``: in one statement rather than one per row (the table's statement triggers
    then run once for the batch, not once per row).
    """
    if not rows:
        return 0
    if at_once:
        json_cols = {c.name for c in table.columns if isinstance(c.type, JSONB)}
        columns = {
            c.name: [
                json.dumps(r.get(c.name)) if c.name in json_cols else r.get(c.name) for r in rows
            ]
            for c in table.columns
        }
        result = await conn.execute(_insert_unnested(table), columns)
    else:
        result = await conn.execute(insert(table).on_conflict_do_nothing(), list(rows))
    count = max(result.rowcount, 0)
    metrics.ROWS_WRITTEN.labels(table.name).inc(count)
    return count


#: rows for one table: the table, its column names, and one tuple of values per row
Records = tuple[Table, Sequence[str], Sequence[tuple[Any, ...]]]


async def copy_ignore(
    conn: Any, table: Table, columns: Sequence[str], records: Sequence[tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """Insert rows through COPY, skipping those whose key exists (redeliveries).

    The rows are copied into a session-local staging table, then moved with one
    ``INSERT … SELECT … ON CONFLICT DO NOTHING``: COPY's speed with the idempotency of a
    keyed insert. ``conn`` is an asyncpg connection inside a transaction (the staging
    table empties at commit); JSONB values are JSON text; the first column is the key.
    Returns the records inserted.
    """
    if not records:
        return []
    stage = _stage(table)
    await conn.copy_records_to_table(stage, records=records, columns=columns)
    names = ", ".join(f'"{c}"' for c in columns)
    key = f'"{columns[0]}"'
    # The key alone decides, also where the table's primary key holds more (a partitioned
    # table's includes ``at``): one row per key, none whose key is already stored.
    stored = await conn.fetch(
        f'INSERT INTO "{table.name}" ({names}) SELECT DISTINCT ON ({key}) {names} '
        f'FROM {stage} s WHERE NOT EXISTS (SELECT 1 FROM "{table.name}" t '
        f"WHERE t.{key} = s.{key}) ON CONFLICT DO NOTHING RETURNING {key}"
    )
    keys = {r[0] for r in stored}
    new = []
    for r in records:
        if r[0] in keys:  # once, even if the batch carried the same key twice
            keys.discard(r[0])
            new.append(r)
    return new


class _ReusedId(Exception):
    """A copied row's event id is stored under another ``at`` (see ``_refuse_reused_ids``)."""


#: Their primary key is ``(event_id, at)`` (partitioned by month of ``at``), so the COPY
#: alone would store an event id reused with another timestamp: it is checked. In a table
#: already copied, such an id has two rows; in one not copied yet, any row at all.
_REUSED = (
    'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE event_id = ANY(${n}::text[]) '
    "GROUP BY event_id HAVING count(*) > 1)"
)
_STORED = 'SELECT EXISTS (SELECT 1 FROM "{table}" WHERE event_id = ANY(${n}::text[]))'


async def _refuse_reused_ids(conn: Any, copied: Records, coming: Sequence[Records]) -> None:
    """Raise if an id of the batch is stored already (the transaction is rolled back and
    the batch goes through staging, where the stored row wins and the other is reported).

    Asked between the first table's COPY (``copied``) and the others' (``coming``), in
    one round trip for all the partitioned tables: a trigger on ``token_usage`` holds its
    hourly rollup's rows from its COPY to the commit, and a second batch being written
    waits for them, so nothing more than the COPY and the commit is done in that time.
    """
    checked = [
        (template, t, r)
        for template, (t, _, r) in [(_REUSED, copied), *((_STORED, c) for c in coming)]
        if r and t.name in PARTITIONED
    ]
    if not checked:
        return
    query = "SELECT " + " OR ".join(
        f"({template.format(table=t.name, n=i)})" for i, (template, t, _) in enumerate(checked, 1)
    )
    if await conn.fetchval(query, *([row[0] for row in r] for _, _, r in checked)):
        raise _ReusedId(", ".join(t.name for _, t, _ in checked))


def _stage(table: Table) -> str:
    return f"tracker_stage_{table.name}"


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Leave a released COPY connection as it is (its staging tables are the point)."""


class TrackerRepo:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: COPY new events straight into their tables (see `copy_many`)
        self._direct = True
        self._copy_pool: asyncpg.Pool | None = None
        self._copy_pool_lock = asyncio.Lock()
        self._writing = WritingIds()

    async def _copy_connections(self) -> asyncpg.Pool:
        """The pool `copy_many` writes through, opened on first use.

        COPY needs asyncpg itself, and a pool of its own skips what SQLAlchemy's pool does
        around each use (a ping before, a reset after): two round trips per batch. Three
        connections at most: two batches being written and a question asked after a
        commit (`any_recorded`).
        """
        async with self._copy_pool_lock:
            if self._copy_pool is None:
                url = self.engine.url.set(drivername="postgresql")
                self._copy_pool = await asyncpg.create_pool(
                    url.render_as_string(hide_password=False),
                    min_size=1,
                    max_size=3,
                    reset=_keep_session,
                )
            return self._copy_pool

    async def close(self) -> None:
        """Close the COPY connections (the engine is disposed by its owner)."""
        if self._copy_pool is not None:
            await self._copy_pool.close()
            self._copy_pool = None

    async def copy_many(self, *batches: Records) -> list[Sequence[tuple[Any, ...]]]:
        """Insert several tables' rows in one transaction, through COPY; keys already
        stored are skipped (a redelivered or duplicated event changes nothing). Returns,
        for each batch, the records that were new.

        A batch is first copied straight into its tables, as new events almost always are.
        If a key already exists, that transaction is rolled back and the batch goes through
        staging tables instead (`copy_ignore`), and so do the following batches until one
        of them turns out to have no stored keys. For the high-volume tables: a plain COPY
        costs the database about half the work of staging, and Python a fraction of
        SQLAlchemy's ``executemany``.

        Calls may overlap; one whose event ids (the first column) meet those of a call in
        progress waits for it (`WritingIds`), so the check against reused ids holds.
        """
        pool = await self._copy_connections()
        ids = (r[0] for _, _, records in batches for r in records)
        async with self._writing.claim(ids), pool.acquire() as conn:
            if self._direct:
                present = [b for b in batches if b[2]]
                try:
                    async with conn.transaction():
                        for i, (table, columns, records) in enumerate(present):
                            await conn.copy_records_to_table(
                                table.name, records=records, columns=columns
                            )
                            if i == 0:
                                await _refuse_reused_ids(conn, present[0], present[1:])
                except (asyncpg.UniqueViolationError, _ReusedId):
                    self._direct = False
                else:
                    for table, _, records in batches:
                        metrics.ROWS_WRITTEN.labels(table.name).inc(len(records))
                    return [records for _, _, records in batches]
            # Outside the transaction, so a rolled-back batch cannot take the staging
            # tables (or statements prepared on them) along.
            await conn.execute(
                "".join(
                    f"CREATE TEMP TABLE IF NOT EXISTS {_stage(table)} "
                    f'(LIKE "{table.name}" INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;'
                    for table, _, _ in batches
                )
            )
            stored: list[Sequence[tuple[Any, ...]]] = []
            async with conn.transaction():
                # An id the first table had already (a redelivery, or another event under
                # that id: a conflict) adds no row to the others: a worker call whose id
                # is stored as another event must not count its tokens.
                refused: set[Any] = set()
                for i, (table, columns, records) in enumerate(batches):
                    if refused:
                        records = [r for r in records if r[0] not in refused]
                    stored.append(await copy_ignore(conn, table, columns, records))
                    metrics.ROWS_WRITTEN.labels(table.name).inc(len(stored[-1]))
                    if i == 0:
                        refused = {r[0] for r in records} - {r[0] for r in stored[-1]}
            self._direct = sum(map(len, stored)) == sum(len(r) for _, _, r in batches)
            return stored

    async def insert_many(self, *batches: tuple[Any, Sequence[dict[str, Any]]]) -> None:
        """Insert several tables' rows in one transaction, one statement per table: the
        triggers on ``runs`` then take their runs' locks once, in order (a statement per
        row would take them in the batch's order and could deadlock with a writer of the
        same runs' calls)."""
        async with self.engine.begin() as conn:
            for table, rows in batches:
                if rows:
                    stmt = insert(table).values(list(rows)).on_conflict_do_nothing()
                    count = max((await conn.execute(stmt)).rowcount, 0)
                    metrics.ROWS_WRITTEN.labels(table.name).inc(count)

    async def differing_events(self, events: Sequence[tuple[Any, ...]]) -> set[int]:
        """Positions of ``run_events`` records (``EVENT_COLUMNS`` order, detail as JSON
        text) whose id is stored with other values."""
        ids = list({r[0] for r in events})
        async with self.engine.connect() as conn:
            stored = {
                r.event_id: (r.event_id, r.run_id, r.workspace, r.kind, r.at, r.detail)
                for r in await conn.execute(
                    select(run_events).where(run_events.c.event_id.in_(ids))
                )
            }
        return {
            i
            for i, r in enumerate(events)
            if r[0] in stored and (*r[:5], json.loads(r[5])) != stored[r[0]]
        }

    async def insert_events(self, table: Table, rows: Sequence[dict[str, Any]]) -> set[int]:
        """Insert immutable rows keyed by ``event_id``; returns the positions of rows that
        reused a stored id with other values (the stored row stays)."""
        async with self.engine.begin() as conn:
            return await _insert_events(conn, table, rows)

    async def record_tasks(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new tasks (a known id is skipped) in one transaction, with the facts
        and the status of any events about them that arrived first."""
        ids = [r["task_id"] for r in rows]
        async with self.engine.begin() as conn:
            await facts.lock_tasks(conn, ids)
            await insert_ignore(conn, tasks, rows)
            await facts.apply_waiting(conn, ids)
            await _set_latest_status(conn, ids)

    async def put_facts(self, found: Mapping[str, Mapping[str, Any]]) -> int:
        """Set estimates or models on tasks in one transaction (see :mod:`.facts`).

        Returns:
            How many of the tasks were not recorded yet (their facts wait for them).
        """
        async with self.engine.begin() as conn:
            early = await facts.put_facts(conn, found)
        metrics.ROWS_WRITTEN.labels(tasks.name).inc(len(found) - early)
        return early

    async def record_status_changes(self, rows: Sequence[dict[str, Any]]) -> set[int]:
        """Store transitions and move their tasks to their latest status, in one
        transaction. Returns the positions of rows that reused a stored id with other
        values (the stored row stays).

        Takes each task's turn first, as recording tasks does: otherwise a task recorded
        while its transition is being stored misses it, and the update misses the task.
        """
        async with self.engine.begin() as conn:
            await facts.lock_tasks(conn, [r["task_id"] for r in rows])
            # one statement: the lane triggers rebuild the batch's tasks and days once
            conflicts = await _insert_events(conn, task_status_events, rows, at_once=True)
            await _set_latest_status(conn, [r["task_id"] for r in rows])
        return conflicts

    async def set_latest_status(self, task_ids: Iterable[str]) -> None:
        """Move each task to the status of its latest recorded transition."""
        async with self.engine.begin() as conn:
            await _set_latest_status(conn, task_ids)

    async def run(self, run_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(runs).where(runs.c.run_id == run_id))).first()
        return dict(row._mapping) if row else None

    async def run_models(self, run_ids: Iterable[str]) -> dict[str, tuple[str | None, str | None]]:
        """The model and provider each of ``run_ids`` started with (runs not started: absent)."""
        ids = set(run_ids)
        if not ids:
            return {}
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(runs.c.run_id, runs.c.model, runs.c.provider).where(runs.c.run_id.in_(ids))
            )
            return {r.run_id: (r.model, r.provider) for r in found}

    async def task(self, task_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(tasks).where(tasks.c.task_id == task_id))).first()
        return dict(row._mapping) if row else None

    async def event_count(self, run_id: str) -> int:
        async with self.engine.connect() as conn:
            return int(
                await conn.scalar(
                    select(func.count())
                    .select_from(run_events)
                    .where(run_events.c.run_id == run_id)
                )
                or 0
            )

    async def mark_finished(self, e: RunFinished) -> dict[str, Any] | None:
        """Note that a run's finish arrived (the first time: when, and how many events it
        announced) and return the run row, or None if the run has not started. The finish
        itself is stored with the totals (:meth:`save_totals`)."""
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    update(runs)
                    .where(runs.c.run_id == e.run_id)
                    .values(
                        expected_events=e.event_count,
                        finish_seen_at=func.coalesce(runs.c.finish_seen_at, func.now()),
                    )
                    .returning(*runs.c)
                )
            ).first()
        return dict(row._mapping) if row else None

    async def any_recorded(self, run_ids: Iterable[str]) -> list[str]:
        """Which of ``run_ids`` have recorded totals: one round trip on a COPY connection,
        asked after every batch of events (almost always: none)."""
        ids = list(set(run_ids))
        if not ids:
            return []
        pool = await self._copy_connections()
        async with pool.acquire() as conn:
            found = await conn.fetch(
                "SELECT run_id FROM runs WHERE run_id = ANY($1::varchar[]) AND totals IS NOT NULL",
                ids,
            )
        return [r["run_id"] for r in found]

    async def recorded_runs(self, run_ids: Iterable[str]) -> list[dict[str, Any]]:
        """The runs among ``run_ids`` whose totals were already recorded."""
        ids = list(set(run_ids))
        if not ids:
            return []
        async with self.engine.connect() as conn:
            found = await conn.execute(
                select(runs).where(runs.c.run_id.in_(ids), runs.c.totals.is_not(None))
            )
            return [dict(r._mapping) for r in found]

    async def run_facts(self, run_id: str) -> tuple[list[UsageRow], list[SubtaskMark], RunSummary]:
        """What a run's totals are computed from: its usage rows, its subtask start and
        complete events, and counts over all its stored events."""
        async with self.engine.connect() as conn:
            usage = (
                await conn.execute(
                    select(
                        token_usage.c.input_tokens,
                        token_usage.c.output_tokens,
                        token_usage.c.cache_read_tokens,
                        token_usage.c.cache_write_tokens,
                        token_usage.c.reasoning_tokens,
                        token_usage.c.cost_micros,
                    ).where(token_usage.c.run_id == run_id)
                )
            ).all()
            marks = (
                await conn.execute(
                    select(run_events.c.kind, run_events.c.at, run_events.c.detail).where(
                        run_events.c.run_id == run_id,
                        run_events.c.kind.in_(("subtask_started", "subtask_completed")),
                    )
                )
            ).all()
            passed = run_events.c.detail["passed"].as_boolean()
            counts = (
                await conn.execute(
                    select(
                        func.count(),
                        func.count().filter(run_events.c.kind == "verification", passed),
                    ).where(run_events.c.run_id == run_id)
                )
            ).one()
        return (
            [UsageRow(*u) for u in usage],
            [
                SubtaskMark(
                    subtask=m.detail["subtask"],
                    at=m.at,
                    completed=m.kind == "subtask_completed",
                    quality=m.detail.get("quality"),
                )
                for m in marks
            ],
            RunSummary(events=int(counts[0]), verifications_passed=int(counts[1])),
        )

    async def save_totals(
        self,
        e: RunFinished,
        totals: dict[str, Any],
        task_values: dict[str, Any],
    ) -> None:
        """Keep a run's finish and totals, unless totals over more events are already
        stored (two re-totals racing); put the task on its token rows; update the task."""
        run_id, task_id = e.run_id, e.task_id
        finish = {
            "finished_at": e.finished_at,
            "outcome": e.outcome,
            "success": e.success,
            "quality": e.quality.model_dump(mode="json"),
            "reservation_id": func.coalesce(runs.c.reservation_id, e.reservation_id),
            "totals": totals,
        }
        newer = (
            func.coalesce(runs.c.totals["event_count"].as_integer(), -1) <= totals["event_count"]
        )
        async with self.engine.begin() as conn:
            await conn.execute(update(runs).where(runs.c.run_id == run_id, newer).values(finish))
            # Worker calls arrive keyed by run only; once the run is finished its task is
            # known, so its token rows can be read by task without a join.
            await conn.execute(
                update(token_usage)
                .where(token_usage.c.run_id == run_id, token_usage.c.task_id.is_(None))
                .values(task_id=task_id)
            )
            if task_values:
                await conn.execute(
                    update(tasks).where(tasks.c.task_id == task_id).values(**task_values)
                )


async def _insert_events(
    conn: AsyncConnection, table: Table, rows: Sequence[dict[str, Any]], *, at_once: bool = False
) -> set[int]:
    await insert_ignore(conn, table, rows, at_once=at_once)
    ids = [r["event_id"] for r in rows]
    stored = {
        r.event_id: r._mapping
        for r in await conn.execute(select(table).where(table.c.event_id.in_(ids)))
    }
    return {
        i for i, r in enumerate(rows) if any(stored[r["event_id"]][k] != v for k, v in r.items())
    }


async def _set_latest_status(conn: AsyncConnection, task_ids: Iterable[str]) -> None:
    """Move each task to the status of its latest recorded transition.

    Reads every stored transition, not just the batch at hand: transitions can arrive
    out of order (a late or redelivered one, or one before its task), and a task must
    never move back to an older status because of that.
    """
    latest = (
        select(task_status_events.c.to_status)
        .where(task_status_events.c.task_id == tasks.c.task_id)
        .order_by(task_status_events.c.changed_at.desc(), task_status_events.c.event_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    await conn.execute(
        update(tasks)
        .where(tasks.c.task_id.in_(set(task_ids)))
        .values(status=func.coalesce(latest, tasks.c.status))
    )


@dataclass(frozen=True)
class RunSummary:
    """Counts over a run's stored events."""

    events: int
    verifications_passed: int
