"""Estimates and assigned models put on tasks, in whatever order the events arrive.

``task.estimated`` and ``task.assigned`` can overtake ``task.created`` (three streams,
three consumers). Their facts go straight onto the task when it is recorded; otherwise
they wait in ``task_facts_pending`` and the batch that records the task moves them onto
it. Nothing is redelivered or retried for being early.

Both sides first take a transaction-scoped advisory lock per task (in sorted order, so
two batches never deadlock), which makes them take turns per task: whichever commits
second sees what the first wrote, and no fact is left behind in the waiting table.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import ARRAY, Float, String, bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection

#: The task columns these events set; a fact left out (None) keeps the stored value.
FACT_COLUMNS = ("story_points", "hours_p50", "hours_p90", "value_score", "task_type", "model")
_TYPES = {"story_points": Float, "hours_p50": Float, "hours_p90": Float, "value_score": Float}

_LOCK = text(
    "SELECT pg_advisory_xact_lock(hashtextextended(id, 1130)) FROM unnest(:ids) AS id ORDER BY id"
).bindparams(bindparam("ids", type_=ARRAY(String)))

_SET = ", ".join(f"{c} = coalesce(f.{c}, tasks.{c})" for c in FACT_COLUMNS)
_ARRAYS = ", ".join(f":{c}" for c in ("task_id", *FACT_COLUMNS))
_COLUMNS = ", ".join(("task_id", *FACT_COLUMNS))
_PARAMS = [bindparam(c, type_=ARRAY(_TYPES.get(c, String))) for c in ("task_id", *FACT_COLUMNS)]

#: Facts onto recorded tasks; returns the ids it found.
_UPDATE = text(
    f"UPDATE tasks SET {_SET} FROM unnest({_ARRAYS}) AS f({_COLUMNS}) "
    "WHERE tasks.task_id = f.task_id RETURNING tasks.task_id"
).bindparams(*_PARAMS)

#: Facts of tasks not recorded yet, merged with any already waiting.
_HOLD = text(
    f"INSERT INTO task_facts_pending ({_COLUMNS}) "
    f"SELECT * FROM unnest({_ARRAYS}) AS f({_COLUMNS}) ORDER BY task_id "
    "ON CONFLICT (task_id) DO UPDATE SET "
    + ", ".join(f"{c} = coalesce(excluded.{c}, task_facts_pending.{c})" for c in FACT_COLUMNS)
).bindparams(*_PARAMS)

#: Waiting facts of the given, now recorded, tasks moved onto them.
_APPLY = text(
    "WITH f AS (DELETE FROM task_facts_pending p USING tasks t "
    "WHERE p.task_id = t.task_id AND p.task_id = ANY(:ids) RETURNING p.*) "
    f"UPDATE tasks SET {_SET} FROM f WHERE tasks.task_id = f.task_id"
).bindparams(bindparam("ids", type_=ARRAY(String)))


def merged(facts: Iterable[tuple[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """One set of facts per task, later events' facts over earlier ones'.

    Example:
        >>> merged([("t1", {"model": "a"}), ("t1", {"model": "b", "story_points": 3})])
        {'t1': {'model': 'b', 'story_points': 3}}
    """
    out: dict[str, dict[str, Any]] = {}
    for task_id, values in facts:
        row = out.setdefault(task_id, {})
        row.update({k: v for k, v in values.items() if v is not None})
    return out


async def lock_tasks(conn: AsyncConnection, task_ids: Iterable[str]) -> None:
    """Take this transaction's turn on each task (released at commit or rollback)."""
    ids = sorted(set(task_ids))
    if ids:
        await conn.execute(_LOCK, {"ids": ids})


async def put_facts(conn: AsyncConnection, facts: Mapping[str, Mapping[str, Any]]) -> int:
    """Set facts on their tasks; hold those of tasks not recorded yet.

    Call inside a transaction. Returns how many tasks had to wait for their record.
    """
    if not facts:
        return 0
    ids = sorted(facts)
    await lock_tasks(conn, ids)
    arrays = _arrays(ids, facts)
    found = set((await conn.execute(_UPDATE, arrays)).scalars())
    early = [i for i in ids if i not in found]
    if early:
        await conn.execute(_HOLD, _arrays(early, facts))
    return len(early)


async def apply_waiting(conn: AsyncConnection, task_ids: Sequence[str]) -> None:
    """Move facts that waited for these just-recorded tasks onto them (in the
    transaction that records them, after :func:`lock_tasks`)."""
    if task_ids:
        await conn.execute(_APPLY, {"ids": list(task_ids)})


def _arrays(ids: Sequence[str], facts: Mapping[str, Mapping[str, Any]]) -> dict[str, list[Any]]:
    values: dict[str, list[Any]] = {"task_id": list(ids)}
    for column in FACT_COLUMNS:
        values[column] = [facts[i].get(column) for i in ids]
    return values
