"""``GET /export/{kind}``: the tracker's rows, filtered and paged, as JSON or CSV.

Kinds are ``runs``, ``tasks``, ``token_usage`` and ``status_events``. Rows come oldest
first by their natural time (a run's start, a task's creation, a worker call's time, a
status change's time), ties broken by the row's id. Pages are keyset pages: the opaque
``cursor`` holds the last row's (time, id) and the next page starts right after it, so a
deep page costs what the first does and no row is ever served twice.

JSON answers ``{"rows": [...], "next_cursor": "..." | null}``; ``format=csv`` answers
CSV with a header row and the cursor in the ``X-Next-Cursor`` header (absent on the
last page).
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, FromClause, Table, func, or_, select, true, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.responses import Response

from services.reporter.auth import ExportRows
from services.reporter.errors import bad_parameter
from services.reporter.params import Params, parse_since
from services.reporter.rewarded import job_runs, rewarded_runs
from tally.db.tables import RUN_TIME, runs, task_status_events, tasks, token_usage
from tally.moneyview import with_money

DEFAULT_LIMIT = 500
#: The most rows one request answers; more come page by page (``cursor``).
MAX_LIMIT = 10_000
FORMATS = ("json", "csv")
#: Query parameters every kind takes besides its filters.
PAGING = ("since", "until", "limit", "cursor", "format")

Filter = Callable[[str], ColumnElement[bool]]


def _equals(column: ColumnElement[Any]) -> Filter:
    return lambda value: column == value


def _columns(table: Table, *names: str) -> dict[str, Filter]:
    return {name: _equals(table.c[name]) for name in names}


def _usage_of_task(task_id: str) -> ColumnElement[bool]:
    # Worker calls arrive keyed by run; the tracker adds the task when the run finishes,
    # so the calls of a run still going are found through the run.
    return or_(
        token_usage.c.task_id == task_id,
        token_usage.c.run_id.in_(select(runs.c.run_id).where(runs.c.task_id == task_id)),
    )


@dataclass(frozen=True)
class ExportKind:
    """A table as export serves it: its time, its id, and the filters it takes."""

    table: Table | FromClause
    at: ColumnElement[datetime]  #: the natural time: order, ``since``/``until``, cursor
    key: ColumnElement[str]  #: unique: breaks ties between rows of the same time
    filters: Mapping[str, Filter]


KINDS: dict[str, ExportKind] = {
    "runs": ExportKind(
        runs,
        # A run's row always has a creation time, even the rare one without a start.
        RUN_TIME,
        runs.c.run_id,
        _columns(runs, "workspace", "model", "outcome", "task_id", "run_id"),
    ),
    "tasks": ExportKind(
        tasks,
        tasks.c.created_at,
        tasks.c.task_id,
        _columns(tasks, "workspace", "model", "status", "task_id"),
    ),
    "token_usage": ExportKind(
        token_usage,
        token_usage.c.at,
        token_usage.c.event_id,
        {**_columns(token_usage, "workspace", "model", "run_id"), "task_id": _usage_of_task},
    ),
    "status_events": ExportKind(
        task_status_events,
        task_status_events.c.changed_at,
        task_status_events.c.event_id,
        {
            **_columns(task_status_events, "workspace", "task_id"),
            "status": _equals(task_status_events.c.to_status),  # the status changed to
            "run_id": _equals(task_status_events.c.task_run_id),
        },
    ),
}


def _rewarded_kind(table: FromClause, job: bool = False) -> ExportKind:
    c = table.c
    return ExportKind(
        table,
        func.coalesce(c.started_at, c.created_at),
        c.run_id,
        {
            **{name: _equals(c[name]) for name in _RUN_FILTERS},
            **({"job_id": _equals(c.learning_job_id)} if job else {}),
            "success_only": lambda v: c.learned_success.is_(True) if v == "true" else true(),
            "min_reward": lambda v: c.reward >= float(v),
        },
    )


_RUN_FILTERS = ("workspace", "model", "outcome", "task_id", "run_id")
#: ``runs`` with ``with_rewards``: the learner's rewards, or a learning job's (``job_id``).
REWARDED = {
    "runs+rewards": _rewarded_kind(rewarded_runs()),
    "runs+job": _rewarded_kind(job_runs(), job=True),
}
KINDS.update(REWARDED)


def rewarded_kind(kind: str, params: dict[str, str]) -> str:
    """The kind to serve: runs with rewards when ``with_rewards`` (or ``job_id``) is given.

    Raises:
        ValueError: reward filters without ``with_rewards``, or on another kind.
    """
    wants = params.pop("with_rewards", "").lower() in ("true", "1")
    reward_params = [p for p in ("success_only", "min_reward", "job_id") if params.get(p)]
    if not wants and not reward_params:
        return kind
    if kind != "runs":
        name = reward_params[0] if reward_params else "with_rewards"
        raise ValueError(f"{name}: only runs have rewards, not {kind}")
    if not wants:
        raise ValueError(f"{reward_params[0]}: needs with_rewards=true")
    if params.get("success_only", "").lower() in ("true", "1"):
        params["success_only"] = "true"
    else:
        params.pop("success_only", None)
    return "runs+job" if params.get("job_id") else "runs+rewards"


def encode_cursor(kind: str, at: datetime, key: str) -> str:
    """An opaque, URL-safe cursor for the row of ``kind`` at ``(at, key)``."""
    raw = json.dumps([kind, at.isoformat(), key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(kind: str, cursor: str) -> tuple[datetime, str]:
    """The ``(time, id)`` a cursor of ``kind`` points at.

    Raises:
        ValueError: the cursor was not given out by ``/export/{kind}`` (message names it).
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_kind, at, key = json.loads(raw)
        parsed = datetime.fromisoformat(at)
        if cursor_kind == kind and isinstance(key, str) and parsed.tzinfo:
            return parsed, key
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        pass
    raise ValueError(f"cursor: not a cursor of /export/{kind}, got {cursor!r}")


def plain(value: Any) -> Any:
    """A column value as JSON shows it: times in ISO 8601, everything else as it is."""
    return value.isoformat() if isinstance(value, datetime) else value


def time_text(value: Any) -> str:
    """``json.dumps``'s ``default``: a time in ISO 8601 (nothing else is left to it).

    Raises:
        TypeError: ``value`` is not a time.
    """
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def csv_cell(value: Any) -> str:
    """A column value as a CSV cell: empty for null, JSON for lists, maps and booleans."""
    if value is None:
        return ""
    if isinstance(value, dict | list | bool):
        return json.dumps(value, separators=(",", ":"))
    return str(plain(value))


def render_csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV text: a header row of ``columns``, then one line per row (CRLF line ends)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    writer.writerows([csv_cell(row.get(c)) for c in columns] for row in rows)
    return out.getvalue()


@dataclass(frozen=True)
class ExportQuery:
    """One page request, checked."""

    kind: str
    filters: dict[str, str]
    since: datetime | None = None
    until: datetime | None = None
    limit: int = DEFAULT_LIMIT
    after: tuple[datetime, str] | None = None
    format: str = "json"


def parse_query(kind: str, params: Mapping[str, str], now: datetime) -> ExportQuery:
    """Check a request's kind and parameters; empty values count as not given.

    Raises:
        ValueError: an unknown kind, filter or format, a bad window, limit or cursor
            (the message starts with the parameter's name).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    spec = KINDS[kind]
    for name in params:
        if name not in spec.filters and name not in PAGING:
            known = ", ".join([*spec.filters, *PAGING])
            raise ValueError(f"{name}: not a parameter of /export/{kind} (takes {known})")
    given = {name: value for name, value in params.items() if value}
    window: dict[str, datetime] = {}
    for name in ("since", "until"):
        if name in given:
            try:
                window[name] = parse_since(given[name], now)
            except ValueError as exc:
                raise ValueError(f"{name}: {str(exc).removeprefix('since: ')}") from None
    limit = given.get("limit", str(DEFAULT_LIMIT))
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        raise ValueError(f"limit: expected a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    fmt = given.get("format", "json")
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    return ExportQuery(
        kind=kind,
        filters={name: value for name, value in given.items() if name in spec.filters},
        since=window.get("since"),
        until=window.get("until"),
        limit=int(limit),
        after=decode_cursor(kind, given["cursor"]) if "cursor" in given else None,
        format=fmt,
    )


async def export_page(
    engine: AsyncEngine, query: ExportQuery
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of rows, oldest first, and the cursor of the next page (None if last)."""
    spec = KINDS[query.kind]
    stmt = (
        select(spec.table, spec.at.label("_at"))
        .order_by(spec.at, spec.key)
        .limit(query.limit + 1)  # one more than asked: is there a next page?
    )
    for name, value in query.filters.items():
        stmt = stmt.where(spec.filters[name](value))
    if query.since:
        stmt = stmt.where(spec.at >= query.since)
    if query.until:
        stmt = stmt.where(spec.at < query.until)
    if query.after:
        stmt = stmt.where(tuple_(spec.at, spec.key) > tuple_(*query.after))
    async with engine.connect() as conn:
        result = await conn.execute(stmt)
        names = list(result.keys())
        rows = [dict(zip(names, r, strict=True)) for r in result]
    page = rows[: query.limit]
    times = [row.pop("_at") for row in page]
    if len(rows) > query.limit:
        return page, encode_cursor(query.kind, times[-1], page[-1][spec.key.key])
    return page, None


#: A filter's or cursor's value as the query gives it (empty: not given).
_Value = Annotated[str | None, Field(max_length=1000, pattern=r"^[^\x00-\x1f\x7f]*$")]


class ExportParams(Params):
    """Every parameter ``/export/{kind}`` knows; each kind takes the paging ones and its own
    filters (runs: workspace, model, outcome, task_id, run_id, and with ``with_rewards``:
    success_only, min_reward, job_id; tasks: workspace, model, status, task_id; token_usage:
    workspace, model, run_id, task_id; status_events: workspace, task_id, status, run_id)."""

    workspace: _Value = None
    model: _Value = None
    outcome: _Value = None
    status: _Value = None
    task_id: _Value = None
    run_id: _Value = None
    since: _Value = Field(None, description="From: 7d, 12h, 2w or an ISO date/time.")
    until: _Value = Field(None, description="Before: 7d, 12h, 2w or an ISO date/time.")
    limit: int = Field(
        DEFAULT_LIMIT,
        ge=1,
        le=MAX_LIMIT,
        description=f"Rows in a page: at most {MAX_LIMIT:,} per request; page on with `cursor`.",
    )
    cursor: _Value = Field(None, description="next_cursor of the previous page.")
    format: Literal["json", "csv"] = "json"
    with_rewards: bool = Field(
        False, description="runs: with each run's reward and group-relative advantage."
    )
    success_only: bool = Field(False, description="With rewards: only runs that succeeded.")
    min_reward: float | None = Field(None, description="With rewards: reward at least this.")
    job_id: _Value = Field(None, description="With rewards: a learning job's runs and rewards.")


class ExportPage(BaseModel):
    """One page of rows, oldest first; ``next_cursor`` is null on the last page."""

    rows: list[dict[str, Any]]
    next_cursor: str | None


def export_router(engine: AsyncEngine) -> APIRouter:
    """The ``/export/{kind}`` route."""
    router = APIRouter(tags=["export"])
    csv_page = {"text/csv": {"schema": {"type": "string"}}}

    @router.get(
        "/export/{kind}",
        response_model=ExportPage,
        responses={200: {"content": csv_page, "description": "A page (JSON or CSV)."}},
    )
    async def export(
        kind: Annotated[Literal["runs", "tasks", "token_usage", "status_events"], Path()],
        q: Annotated[ExportParams, Query()],
        who: ExportRows,
    ) -> Response | ExportPage:
        """Rows of one of the tracker's tables, filtered, oldest first, in keyset pages.

        ``format=csv`` answers CSV with a header row; its next cursor is the
        ``X-Next-Cursor`` header (absent on the last page).
        """
        given = {k: str(v) for k, v in q.model_dump(exclude_unset=True).items() if v is not None}
        if (workspace := who.workspace_for(q.workspace)) is not None:
            given["workspace"] = workspace
        try:
            served = rewarded_kind(kind, given)
            query = parse_query(served, given, datetime.now(UTC))
        except ValueError as exc:
            raise bad_parameter(str(exc).split(":", 1)[0], str(exc)) from None
        rows, cursor = await export_page(engine, query)
        if query.format == "csv":
            columns = [c.name for c in KINDS[query.kind].table.columns]
            return Response(
                render_csv(columns, rows),
                media_type="text/csv",
                headers={"X-Next-Cursor": cursor} if cursor else None,
            )
        # JSON shows money as the API does: exact micro-dollars and a display string. The
        # page is written out directly: checking each cell against `dict[str, Any]` cost
        # more than the query. Times, the only cells JSON cannot write as they are, go
        # through the encoder's `default` (a call per time, not per cell).
        page = {"rows": [with_money(row) for row in rows], "next_cursor": cursor}
        return Response(
            json.dumps(page, ensure_ascii=False, separators=(",", ":"), default=time_text),
            media_type="application/json",
        )

    return router
