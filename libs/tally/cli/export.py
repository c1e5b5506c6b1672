"""``tally export KIND``: every row of a tracker table from the reporter, page by page."""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import typer

from tally.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, console, error_message, fail, settings

if TYPE_CHECKING:
    import httpx

#: Output formats, and the format each asks the reporter for.
FORMATS = {"json": "json", "jsonl": "json", "csv": "csv"}


def export(
    kind: str = typer.Argument(..., help="runs, tasks, token_usage or status_events."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace."),
    since: str | None = typer.Option(None, help="From: 7d, 12h, 2w or an ISO date."),
    until: str | None = typer.Option(None, help="Before: 7d, 12h, 2w or an ISO date."),
    model: str | None = typer.Option(None, help="Only this model (runs, tasks, token_usage)."),
    outcome: str | None = typer.Option(None, help="Only runs with this outcome."),
    status: str | None = typer.Option(None, help="Tasks in / status changes to this status."),
    task_id: str | None = typer.Option(None, "--task", help="Only this task's rows."),
    run_id: str | None = typer.Option(None, "--run", help="Only this run's rows."),
    fmt: str = typer.Option("json", "--format", help="json (one array), jsonl or csv."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write here, not stdout."),
    page_size: int = typer.Option(500, min=1, max=5000, help="Rows per request to the reporter."),
) -> None:
    """Write every matching row, oldest first, following the reporter's pages to the end."""
    if fmt not in FORMATS:
        fail(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}", code=EXIT_BAD_INPUT)
    filters = {
        "workspace": workspace,
        "since": since,
        "until": until,
        "model": model,
        "outcome": outcome,
        "status": status,
        "task_id": task_id,
        "run_id": run_id,
    }
    params = {k: v for k, v in filters.items() if v} | {
        "limit": str(page_size),
        "format": FORMATS[fmt],
    }
    with reporter_client() as client:
        pages = export_pages(client, kind, params)
        # The first page is fetched before the output is opened: bad input leaves no file.
        first = next(pages)
        with _sink(output) as out:
            count = _write(out, fmt, chain([first], pages))
    if output is not None:
        console.print(f"{count:,} {kind} rows written to {output}", highlight=False)


def reporter_client() -> httpx.Client:
    """An HTTP client for the reporter named by ``TALLY_REPORTER_URL``."""
    import httpx  # on use: it is slow to import, and most commands never need it

    s = settings()
    return httpx.Client(base_url=s.reporter_url, timeout=s.timeout_s)


def export_pages(
    client: httpx.Client, kind: str, params: dict[str, str]
) -> Iterator[httpx.Response]:
    """The reporter's answers for ``/export/{kind}``, following the cursor to the last page.

    Raises:
        typer.Exit: the reporter refused the request (2, naming the parameter) or failed.
    """
    import httpx

    cursor: str | None = None
    while True:
        try:
            resp = client.get(
                f"/export/{kind}", params=(params | {"cursor": cursor}) if cursor else params
            )
        except httpx.HTTPError as exc:
            fail(f"reporter did not answer at {client.base_url}: {exc}")
        if resp.status_code in (400, 422):
            fail(error_message(resp), code=EXIT_BAD_INPUT)
        if resp.status_code != 200:
            fail(error_message(resp), code=EXIT_FAILED)
        yield resp
        is_csv = resp.headers.get("content-type", "").startswith("text/csv")
        cursor = resp.headers.get("X-Next-Cursor") if is_csv else resp.json()["next_cursor"]
        if not cursor:
            return


@contextmanager
def _sink(output: Path | None) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        return
    # newline="" keeps CSV's CRLF line ends as the reporter wrote them.
    with output.open("w", encoding="utf-8", newline="") as f:
        yield f


def _write(out: TextIO, fmt: str, pages: Iterable[httpx.Response]) -> int:
    """Write each page as it arrives; the number of rows written."""
    count = 0
    for n, resp in enumerate(pages):
        if fmt == "csv":
            # Every page starts with the same header row: keep the first one only.
            text = resp.text if n == 0 else resp.text.partition("\r\n")[2]
            out.write(text)
            count += sum(1 for _ in csv.reader(io.StringIO(text))) - (n == 0)
            continue
        rows: list[dict[str, Any]] = resp.json()["rows"]
        for row in rows:
            line = json.dumps(row, ensure_ascii=False)
            if fmt == "jsonl":
                out.write(line + "\n")
            else:
                out.write(("[\n  " if count == 0 else ",\n  ") + line)
            count += 1
    if fmt == "json":
        out.write("\n]\n" if count else "[]\n")
    return count
