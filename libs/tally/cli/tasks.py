"""``tally task …``: create tasks and follow them through estimation and assignment."""

from __future__ import annotations

from typing import Any, get_args

import typer
from pydantic import ValidationError

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient, next_event
from tally.commands import first_of, status_changed, task_created
from tally.errors import StepTimeout
from tally.events import (
    Estimate,
    TaskAssigned,
    TaskCreated,
    TaskDeferred,
    TaskEstimated,
    TaskStatusChanged,
)
from tally.events.envelope import describe
from tally.events.tasks import TaskStatus
from tally.views import Assignment, Deferral

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
    """Publish the task, then follow it; a step that does not answer is reported in the
    result (``error``), after the task id: the task exists either way."""
    s = settings()
    result: dict[str, Any] = {"task_id": event.task_id, "event_id": event.event_id}
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        same_task = lambda e: e.task_id == event.task_id  # noqa: E731
        async with (
            client.watch(TaskEstimated, same_task) as estimated,
            client.watch(TaskAssigned, same_task) as assigned,
            client.watch(TaskDeferred, same_task) as deferred,
        ):
            result["duplicate"] = not await client.publish(event)
            if not as_json:
                said = "already published (a retry: nothing new)" if result["duplicate"] else ""
                console.print(f"[bold]task[/]      {event.task_id} {said or 'published'}")
            if result["duplicate"]:
                return result
            try:
                est = await next_event(estimated, step="estimator", timeout=timeout)
                result["estimate"] = est.estimate.model_dump(mode="json")
                if not as_json:
                    print_estimate(est.estimate)
                answer = await first_of(assigned, deferred, timeout=timeout)
            except StepTimeout as exc:
                result["error"] = (
                    f"{exc.step} did not answer within {exc.timeout_s:g}s; the task was "
                    "published and will be handled when it runs"
                )
                return result
            # The reporter's API shows these the same way (tally.views).
            if isinstance(answer, TaskAssigned):
                result["assignment"] = Assignment.of_event(answer).model_dump(mode="json")
            else:
                result["deferred"] = Deferral.of_event(answer).model_dump(mode="json")
            if not as_json:
                print_assignment(answer)
    return result


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
    task_id: str | None = typer.Option(
        None, "--id", help="Task id (default: a new one). Retrying with the same id is a no-op."
    ),
    idempotency_key: str | None = typer.Option(
        None,
        "--idempotency-key",
        help="Any string naming this request: a retry with the same key creates nothing new "
        "(without --id, the task id is derived from it).",
    ),
    timeout: float | None = typer.Option(None, help="Seconds to wait for each step."),
    as_json: bool = JsonOpt,
) -> None:
    """Publish task.created, then print the estimate and the assignment as they arrive.

    The task id is printed first (``--json``: always in the document, with ``error`` when a
    step did not answer in time, exit 1). A retry with the same ``--id`` or
    ``--idempotency-key`` is a no-op (``duplicate: true``).
    """
    s = settings()
    ws = workspace or s.workspace
    key = idempotency_key or (f"id:{task_id}" if task_id else None)
    if key is not None and not key.strip():
        fail("--idempotency-key: must not be blank", code=EXIT_BAD_INPUT)
    try:
        event = task_created(
            source="cli",
            workspace=ws,
            task_id=task_id,
            idempotency_key=key,
            title=title,
            description=description,
            priority=priority,
            labels=tuple(label),
            task_type=task_type,
        )
    except ValidationError as exc:
        fail(describe(exc, "task"), code=EXIT_BAD_INPUT)
    result = run(_create(event, as_json, timeout or s.timeout_s))
    if as_json:
        emit_json(result)
    if "error" in result:
        fail(result["error"])


LANES: tuple[str, ...] = get_args(TaskStatus)


async def _move(event: TaskStatusChanged) -> bool:
    s = settings()
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        return await client.publish(event)


@app.command("status")
def status(
    task_id: str = typer.Argument(..., help="The task to move."),
    lane: str = typer.Argument(..., help=f"Its new status: {', '.join(LANES)}."),
    from_status: str | None = typer.Option(
        None, "--from", help="The status it leaves, when known."
    ),
    workspace: str | None = typer.Option(
        None, "--workspace", "-w", help="Workspace (default from TALLY_WORKSPACE)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Move a task to another lane (publishes task.status_changed; `tally lanes` counts it)."""
    s = settings()
    for name, value in (("LANE", lane), ("--from", from_status)):
        if value is not None and value not in LANES:
            fail(
                f"{name}: unknown status {value!r}; one of {', '.join(LANES)}", code=EXIT_BAD_INPUT
            )
    try:
        event = status_changed(
            task_id=task_id,
            from_status=from_status,
            to_status=lane,
            workspace=workspace or s.workspace,
            command="tally task status",
            source="cli",
        )
    except ValidationError as exc:
        fail(describe(exc, "task status"), code=EXIT_BAD_INPUT)
    run(_move(event))
    if as_json:
        emit_json(
            {
                "task_id": task_id,
                "to_status": lane,
                "changed_at": event.changed_at.isoformat(),
                "event_id": event.event_id,
            }
        )
    else:
        console.print(f"[bold]task[/]      {task_id} → {lane}", highlight=False)
