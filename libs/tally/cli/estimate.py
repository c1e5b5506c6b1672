"""``tally estimate``: estimate a task, or a CSV of tasks, without creating anything.

Asks the estimator over ``task.estimate`` (request/reply): the answer carries points per
subtask and in total, P50/P90 hours, tokens, the value score, the past tasks it learned
from and, when the assigner filled it in, the model it would recommend.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from tally.cli.common import (
    EXIT_BAD_INPUT,
    JsonOpt,
    console,
    emit_json,
    err_console,
    fail,
    run,
    settings,
)
from tally.cli.csvfile import CsvError, blank_to_none, parse_rows, read_rows, split_list
from tally.client import TallyClient
from tally.events import Estimate, EstimateRequest
from tally.events.envelope import describe

#: Requests in flight at once for ``--file``: enough to hide the round trip.
CONCURRENCY = 16
#: Seconds the first request may wait: on a cold workspace it waits for the estimator to
#: build the workspace's model (seconds for thousands of issues, longer on a busy host).
BUILD_WAIT_S = 300.0
#: Columns of ``--file``: a title is required, the rest optional.
FILE_COLUMNS = ("title",)
FILE_OPTIONAL = ("id", "description", "priority", "labels", "task_type")


def print_estimate(est: Estimate) -> None:
    """The estimate as a person reads it: subtasks, totals, range, value and why."""
    console.print(f"[bold]{est.title}[/]  ({est.priority}, {est.task_type})")
    width = max((len(s.title) for s in est.subtasks), default=0)
    for s in est.subtasks:
        console.print(
            f"  - {s.title:<{width}}  {s.story_points:>3g} pts  "
            f"{s.hours_p50:6.1f}h P50  {s.hours_p90:6.1f}h P90",
            highlight=False,
        )
    console.print(
        f"[bold]total[/]  {est.story_points:g} points ({est.band}, from {est.points_source}); "
        f"{est.hours_p50:.1f}h P50 to {est.hours_p90:.1f}h P90 "
        f"(velocity: {est.velocity_source})",
        highlight=False,
    )
    t = est.tokens
    console.print(
        f"[bold]tokens[/] {t.input_tokens:,} in, {t.output_tokens:,} out, "
        f"{t.cached_input_tokens:,} cached in",
        highlight=False,
    )
    console.print(f"[bold]value[/]  {est.value_score:.0f}/100", highlight=False)
    if est.recommended_model:
        console.print(f"[bold]model[/]  {est.recommended_model} (the assigner's choice)")
    if est.evidence:
        console.print("[bold]like[/]")
        for ev in est.evidence:
            console.print(
                f"  {ev.task_id}: {ev.title[:60]} — {ev.story_points:g} pts "
                f"(similarity {ev.similarity:.2f})",
                highlight=False,
            )
    else:
        console.print("[bold]like[/]   no similar completed task yet (priors)")


def request_for(row: dict[str, str], workspace: str) -> EstimateRequest:
    """The estimate request of one ``--file`` row (raises ValidationError naming the field)."""
    return EstimateRequest.model_validate(
        {
            "workspace": workspace,
            "source": "cli",
            "title": row.get("title", ""),
            "description": row.get("description", ""),
            "priority": blank_to_none(row.get("priority", "")) or "P2",
            "labels": split_list(row.get("labels", "")),
            "task_type": blank_to_none(row.get("task_type", "")),
        }
    )


async def _first(client: TallyClient, request: EstimateRequest, timeout: float) -> Estimate:
    """The first answer, waiting for a cold workspace's model to be built (with a status)."""
    with err_console.status("estimating (a cold workspace's model is built first)"):
        return await client.request(
            request, Estimate, step="estimator", timeout=max(timeout, BUILD_WAIT_S)
        )


async def _one(request: EstimateRequest, timeout: float) -> Estimate:
    s = settings()
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        return await _first(client, request, timeout)


async def _many(
    requests: list[EstimateRequest], ids: list[str | None], timeout: float, as_json: bool
) -> None:
    """Estimate every request, printing answers in file order as they become ready."""
    s = settings()
    gate = asyncio.Semaphore(CONCURRENCY)
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:

        async def ask(r: EstimateRequest) -> Estimate:
            async with gate:
                return await client.request(r, Estimate, step="estimator", timeout=timeout)

        # One request first: the others then find the workspace's model warm.
        first = await _first(client, requests[0], timeout)
        jobs = [asyncio.ensure_future(asyncio.sleep(0, first))]
        jobs += [asyncio.ensure_future(ask(r)) for r in requests[1:]]
        columns = (
            TextColumn("estimating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        try:
            with Progress(*columns, console=err_console, transient=True) as progress:
                bar = progress.add_task("estimate", total=len(jobs))
                for job, task_id in zip(jobs, ids, strict=True):
                    est = await job
                    progress.advance(bar)
                    if task_id:
                        est = est.model_copy(update={"task_id": task_id})
                    if as_json:
                        sys.stdout.write(json.dumps(est.model_dump(mode="json")) + "\n")
                        sys.stdout.flush()
                    else:
                        console.print(
                            f"{task_id or '-':<12} {est.story_points:>3g} pts  "
                            f"{est.hours_p50:6.1f}h P50 {est.hours_p90:6.1f}h P90  "
                            f"value {est.value_score:3.0f}  {est.title[:60]}",
                            highlight=False,
                        )
        finally:
            for job in jobs:
                job.cancel()


def estimate(
    title: str | None = typer.Argument(None, help="What the task is, in a line."),
    description: str = typer.Option(
        "", "--description", "-d", help="Details; bullets become subtasks."
    ),
    priority: str = typer.Option("P2", "--priority", "-p", help="P0 (urgent) … P4 (someday)."),
    label: list[str] = typer.Option([], "--label", "-l", help="A label (repeatable)."),
    task_type: str | None = typer.Option(None, "--type", help="Task type, e.g. feature, bug."),
    file: Path | None = typer.Option(
        None,
        "--file",
        "-f",
        help="CSV of tasks (title[,id,description,priority,labels,task_type]); "
        "prints one line (or JSON object) per task.",
    ),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Workspace."),
    timeout: float | None = typer.Option(None, help="Seconds to wait for each answer."),
    as_json: bool = JsonOpt,
) -> None:
    """Estimate a task without creating it: points, hours, tokens, value and evidence."""
    s = settings()
    ws = workspace or s.workspace
    wait = timeout or s.timeout_s
    if (title is None) == (file is None):
        fail("give a task title or --file, not both or neither", code=EXIT_BAD_INPUT)
    if file is not None:
        try:
            rows = read_rows(file, FILE_COLUMNS, FILE_OPTIONAL)
            requests = parse_rows(rows, lambda row: request_for(row, ws))
        except CsvError as exc:
            fail(str(exc), code=EXIT_BAD_INPUT)
        run(_many(requests, [r.get("id") or None for r in rows], wait, as_json))
        return
    try:
        request = EstimateRequest(
            workspace=ws,
            source="cli",
            title=title or "",
            description=description,
            priority=priority,
            labels=tuple(label),
            task_type=task_type,
        )
    except ValidationError as exc:
        fail(describe(exc, "task"), code=EXIT_BAD_INPUT)
    est = run(_one(request, wait))
    if as_json:
        emit_json(est)
    else:
        print_estimate(est)
