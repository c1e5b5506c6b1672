"""``tally history import``: start a workspace's estimates from a tracker's export.

The whole file is validated first (an error names its row and field, exit status 2, and
nothing is sent). The rows then go to the estimator, which owns the history, in batches
over ``history.import`` request/reply; each batch is stored before the next is sent, and
re-importing a file replaces its rows, so an interrupted import is finished by running it
again.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import typer

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.cli.csvfile import CsvError, blank_to_none, parse_rows, read_rows
from tally.client import TallyClient
from tally.errors import PermanentError, TallyError, TransientError
from tally.events.plans import (
    MAX_HISTORY_BATCH,
    HistoryImportReply,
    HistoryImportRequest,
    HistoryRecord,
)

app = typer.Typer(help="Completed tasks the estimator learns from.", no_args_is_help=True)

COLUMNS = ("id", "title", "description", "story_points")
OPTIONAL = ("actual_hours", "task_type", "model", "completed_at")
#: Payload budget of one request, under NATS's 1 MiB limit with room for the envelope.
MAX_BATCH_BYTES = 768 * 1024


def record_for(row: dict[str, str]) -> HistoryRecord:
    """One CSV row as a history record (raises ValidationError naming the field)."""
    return HistoryRecord.model_validate(
        {
            "task_id": row.get("id", ""),
            "title": row.get("title", ""),
            "description": row.get("description", ""),
            "story_points": row.get("story_points", ""),
            "actual_hours": blank_to_none(row.get("actual_hours", "")),
            "task_type": blank_to_none(row.get("task_type", "")),
            "model": blank_to_none(row.get("model", "")),
            "completed_at": blank_to_none(row.get("completed_at", "")),
        }
    )


def read_history(path: Path) -> list[HistoryRecord]:
    """Every row of a history CSV, validated; ids must be unique within the file.

    Raises:
        CsvError: naming each bad row and field.
    """
    records = parse_rows(read_rows(path, COLUMNS, OPTIONAL), record_for)
    first: dict[str, int] = {}
    duplicates = []
    for n, r in enumerate(records, start=1):
        if r.task_id in first:
            duplicates.append(f"row {n}, field id: {r.task_id!r} repeats row {first[r.task_id]}")
        first.setdefault(r.task_id, n)
    if duplicates:
        raise CsvError(duplicates)
    return records


def batches(records: Sequence[HistoryRecord]) -> Iterator[list[HistoryRecord]]:
    """Consecutive batches within both the row and the payload limits of one request."""
    batch: list[HistoryRecord] = []
    size = 0
    for r in records:
        row_bytes = len(r.model_dump_json()) + 1
        if batch and (len(batch) == MAX_HISTORY_BATCH or size + row_bytes > MAX_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(r)
        size += row_bytes
    if batch:
        yield batch


async def _import(
    records: list[HistoryRecord], workspace: str, timeout: float
) -> HistoryImportReply:
    s = settings()
    stored = 0
    reply = HistoryImportReply(workspace=workspace, imported=0, history_size=0)
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        for batch in batches(records):
            request = HistoryImportRequest(workspace=workspace, source="cli", records=tuple(batch))
            try:
                reply = await client.request(
                    request, HistoryImportReply, step="estimator", timeout=timeout
                )
            except TallyError as exc:
                partial = (
                    f"{exc} — {stored} of {len(records)} rows were stored before this; "
                    "importing the file again finishes the job"
                )
                if isinstance(exc, PermanentError):
                    raise PermanentError(partial) from exc
                raise TransientError(partial) from exc
            stored += reply.imported
    return reply.model_copy(update={"imported": stored})


@app.command("import")
def import_history(
    file: Path = typer.Argument(
        ...,
        help="CSV: id,title,description,story_points[,actual_hours,task_type,model,completed_at]",
    ),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Workspace."),
    timeout: float | None = typer.Option(None, help="Seconds to wait for each batch."),
    as_json: bool = JsonOpt,
) -> None:
    """Import completed tasks; estimates in the workspace learn from them at once."""
    s = settings()
    try:
        records = read_history(file)
    except CsvError as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    if not records:
        fail(f"{file.name}: no rows to import", code=EXIT_BAD_INPUT)
    reply = run(_import(records, workspace or s.workspace, timeout or s.timeout_s))
    if as_json:
        emit_json(reply)
    else:
        console.print(
            f"imported {reply.imported} completed tasks into {reply.workspace} "
            f"(history now {reply.history_size})"
        )
