"""``tally export KIND``: every row of a tracker table from the reporter, page by page."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, get_args

import typer

from tally.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    auth_headers,
    console,
    emit_json,
    error_message,
    fail,
    settings,
)
from tally.events.runs import Outcome
from tally.events.tasks import TaskStatus

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
    with_rewards: bool = typer.Option(
        False, "--with-rewards", help="runs: each run's reward and group-relative advantage."
    ),
    success_only: bool = typer.Option(False, "--success-only", help="With rewards: successes."),
    min_reward: float | None = typer.Option(None, "--min-reward", help="With rewards: at least."),
    job_id: str | None = typer.Option(None, "--job", help="With rewards: a learning job's runs."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="JSON: with -o, a summary of what was written; without, the rows as one array.",
    ),
) -> None:
    """Write every matching row, oldest first, following the reporter's pages to the end.

    With ``-o`` the rows go to a temporary file beside the target, renamed over it only
    when the export is complete: a failure never leaves a partial file.
    """
    if fmt not in FORMATS:
        fail(f"--format: expected one of {', '.join(FORMATS)}, got {fmt!r}", code=EXIT_BAD_INPUT)
    if as_json and output is None and fmt != "json":
        fail(
            f"--json prints the rows as JSON: it cannot go with --format {fmt}", code=EXIT_BAD_INPUT
        )
    _check_choice("--outcome", outcome, get_args(Outcome))
    _check_choice("--status", status, get_args(TaskStatus))
    if output is not None:
        _check_output(output)
    filters = {
        "workspace": workspace,
        "since": since,
        "until": until,
        "model": model,
        "outcome": outcome,
        "status": status,
        "task_id": task_id,
        "run_id": run_id,
        "with_rewards": "true" if with_rewards else None,
        "success_only": "true" if success_only else None,
        "min_reward": None if min_reward is None else str(min_reward),
        "job_id": job_id,
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
    if output is None:
        return
    if as_json:
        emit_json({"kind": kind, "rows": count, "format": fmt, "output": str(output)})
    else:
        console.print(f"{count:,} {kind} rows written to {output}", highlight=False)


def _check_choice(option: str, value: str | None, choices: tuple[str, ...]) -> None:
    if value is not None and value not in choices:
        fail(f"{option}: unknown value {value!r}; one of {', '.join(choices)}", code=EXIT_BAD_INPUT)


def _check_output(output: Path) -> None:
    """Refuse an output path that cannot be written, before asking the reporter anything."""
    parent = output.parent
    if output.is_dir():
        fail(f"--output: {output} is a directory; name a file in it", code=EXIT_BAD_INPUT)
    if not parent.is_dir():
        fail(f"--output: directory {parent} does not exist", code=EXIT_BAD_INPUT)
    if not os.access(parent, os.W_OK):
        fail(f"--output: directory {parent} is not writable", code=EXIT_BAD_INPUT)


def reporter_client() -> httpx.Client:
    """An HTTP client for the reporter named by ``TALLY_REPORTER_URL``."""
    import httpx  # on use: it is slow to import, and most commands never need it

    s = settings()
    return httpx.Client(base_url=s.reporter_url, headers=auth_headers(s), timeout=s.timeout_s)


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
    """stdout, or a temporary file beside ``output`` renamed over it once all is written."""
    if output is None:
        yield sys.stdout
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".part", dir=output.parent)
    except OSError as exc:
        fail(f"--output: cannot write in {output.parent}: {exc.strerror}", code=EXIT_BAD_INPUT)
    try:
        # newline="" keeps CSV's CRLF line ends as the reporter wrote them.
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            yield f
        os.replace(tmp, output)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
