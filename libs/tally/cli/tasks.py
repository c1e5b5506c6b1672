"""``tally task …``: create tasks and follow them through estimation and assignment."""

from __future__ import annotations

import asyncio
from typing import Any

import typer
from pydantic import ValidationError

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient, next_event
from tally.errors import StepTimeout
from tally.events import (
    Estimate,
    TaskAssigned,
    TaskCreated,
    TaskDeferred,
    TaskEstimated,
    new_id,
)
from tally.events.envelope import describe

app = typer.Typer(
    help="Create tasks and follow them through estimation and assignment.", no_args_is_help=True
)


def print_estimate(est: Estimate) -> None:
    console.print(
        f"[bold]estimate[/]  {est.story_points:g} points ({est.band}), "
        f"{est.hours_p50:.1f}h P50 / {est.hours_p90:.1f}h P90, value {est.value_score:.0f}/100"
    )
    t = est.tokens
    console.print(
        f"          tokens: {t.input_tokens:,} in, {t.output_tokens:,} out, "
        f"{t.cached_input_tokens:,} cached in"
    )
    for s in est.subtasks:
        console.print(f"          - {s.title}: {s.story_points:g} pts, {s.hours_p50:.1f}h")
    for ev in est.evidence[:3]:
        console.print(
            f"          like {ev.task_id} ({ev.story_points:g} pts, sim {ev.similarity:.2f})"
        )


def print_assignment(a: TaskAssigned | TaskDeferred) -> None:
    if isinstance(a, TaskDeferred):
        console.print(
            f"[bold yellow]deferred[/]  {a.reason}; retry after {a.retry_after:%Y-%m-%d %H:%M}Z"
        )
        return
    r = a.reservation
    console.print(
        f"[bold]assigned[/]  {a.model} ({a.provider}) via {a.subscription}, strategy {a.strategy}"
        + (f", runner-up {a.runner_up}" if a.runner_up else "")
    )
    console.print(
        f"          reserved {r.tokens:,} tokens / ${r.cost_usd:.4f} "
        f"until {r.expires_at:%Y-%m-%d %H:%M}Z ({r.reservation_id})"
    )


async def _create(event: TaskCreated, as_json: bool, timeout: float) -> dict[str, Any]:
    s = settings()
    result: dict[str, Any] = {"task_id": event.task_id}
    async with TallyClient.connect(s.nats_url, namespace=s.namespace, source="cli") as client:
        same_task = lambda e: e.task_id == event.task_id  # noqa: E731
        async with (
            client.watch(TaskEstimated, same_task) as estimated,
            client.watch(TaskAssigned, same_task) as assigned,
            client.watch(TaskDeferred, same_task) as deferred,
        ):
            await client.publish(event)
            if not as_json:
                console.print(f"[bold]task[/]      {event.task_id} published")
            est = await next_event(estimated, step="estimator", timeout=timeout)
            result["estimate"] = est.estimate.model_dump(mode="json")
            if not as_json:
                print_estimate(est.estimate)
            answer = await _first(assigned, deferred, timeout=timeout)
            key = "assignment" if isinstance(answer, TaskAssigned) else "deferred"
            result[key] = answer.model_dump(mode="json")
            if not as_json:
                print_assignment(answer)
    return result


async def _first(
    assigned: asyncio.Queue[TaskAssigned], deferred: asyncio.Queue[TaskDeferred], timeout: float
) -> TaskAssigned | TaskDeferred:
    tasks: list[asyncio.Future[TaskAssigned | TaskDeferred]] = [
        asyncio.ensure_future(assigned.get()),
        asyncio.ensure_future(deferred.get()),
    ]
    done, pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    for t in pending:
        t.cancel()
    if not done:
        raise StepTimeout("assigner", timeout)
    return done.pop().result()


@app.command("create")
def create(
    title: str = typer.Argument(..., help="What the task is, in a line."),
    description: str = typer.Option(
        "", "--description", "-d", help="Details; bullets become subtasks."
    ),
    priority: str = typer.Option("P2", "--priority", "-p", help="P0 (urgent) … P4 (someday)."),
    label: list[str] = typer.Option(
        [], "--label", "-l", help="A label (repeatable): backend, security…"
    ),
    task_type: str | None = typer.Option(
        None, "--type", help="Task type, e.g. feature, bug, docs."
    ),
    workspace: str | None = typer.Option(
        None, "--workspace", "-w", help="Workspace (default from TALLY_WORKSPACE)."
    ),
    task_id: str | None = typer.Option(None, "--id", help="Task id (default: a new one)."),
    timeout: float | None = typer.Option(None, help="Seconds to wait for each step."),
    as_json: bool = JsonOpt,
) -> None:
    """Publish task.created, then print the estimate and the assignment as they arrive."""
    s = settings()
    try:
        event = TaskCreated(
            task_id=task_id or f"T-{new_id()[:10]}",
            title=title,
            description=description,
            priority=priority,
            labels=tuple(label),
            task_type=task_type,
            workspace=workspace or s.workspace,
            source="cli",
        )
    except ValidationError as exc:
        fail(describe(exc, "task"), code=EXIT_BAD_INPUT)
    result = run(_create(event, as_json, timeout or s.timeout_s))
    if as_json:
        emit_json(result)
