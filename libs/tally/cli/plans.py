"""``tally plan import`` and ``tally plan show``: a team's plan, estimated by Tally.

A plan is the common tracker export ``ID,Title,Description,Estimate,Priority,Assignee,
Dependencies,Sprint`` (dependencies comma-separated inside quotes; only ID and Title are
required; Sprint and Assignee become ``sprint:``/``assignee:`` labels). The whole file is
checked first (columns, titles, priorities, description size, dependencies that exist and
do not form a cycle); only a valid plan is published, one ``task.created`` per row with
its ``plan_id``, dependencies and the team's estimate. ``show`` asks the reporter for
Tally's estimates beside the team's, the critical path and the completion forecast.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from pydantic import Field

from tally.cli.common import (
    EXIT_BAD_INPUT,
    JsonOpt,
    console,
    emit_json,
    fail,
    reporter_get,
    run,
    settings,
)
from tally.cli.csvfile import CsvError, blank_to_none, parse_rows, read_rows, split_list
from tally.client import TallyClient
from tally.events import TaskCreated
from tally.events.envelope import Model
from tally.events.tasks import MAX_DESCRIPTION_CHARS, Priority

app = typer.Typer(help="Import a team's plan and compare it with Tally's.", no_args_is_help=True)

#: Columns a plan must have; the others of the common export are read when present.
COLUMNS = ("ID", "Title")
OPTIONAL_COLUMNS = ("Description", "Estimate", "Priority", "Assignee", "Dependencies", "Sprint")


class PlanRow(Model):
    """One task of a plan, as the team wrote it."""

    id: str = Field(min_length=1, max_length=100)
    title: str = Field(min_length=1, max_length=500)
    description: str = Field("", max_length=MAX_DESCRIPTION_CHARS)
    estimate: float | None = Field(None, ge=0)
    priority: Priority = "P2"
    assignee: str | None = None
    dependencies: tuple[str, ...] = ()
    sprint: str | None = None


def plan_row(row: dict[str, str]) -> PlanRow:
    """One CSV row as a plan task (raises ValidationError naming the field)."""
    return PlanRow.model_validate(
        {
            "id": row.get("id", ""),
            "title": row.get("title", ""),
            "description": row.get("description", ""),
            "estimate": blank_to_none(row.get("estimate", "")),
            "priority": blank_to_none(row.get("priority", "").upper()) or "P2",
            "assignee": blank_to_none(row.get("assignee", "")),
            "dependencies": split_list(row.get("dependencies", "")),
            "sprint": blank_to_none(row.get("sprint", "")),
        }
    )


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle as ``[a, b, …, a]`` (each waits for the next), or None.

    Example:
        >>> find_cycle({"a": ["b"], "b": ["a"]})
        ['a', 'b', 'a']
    """
    state: dict[str, int] = {}  # 1 = on the current path, 2 = finished
    for root in deps:
        if state.get(root):
            continue
        path, stack = [root], [iter(deps.get(root, ()))]
        state[root] = 1
        # Iterative depth-first search: long chains must not hit the recursion limit.
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                state[path.pop()] = 2
            elif state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            elif not state.get(nxt) and nxt in deps:
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(deps.get(nxt, ())))
    return None


def check_plan(rows: Sequence[PlanRow]) -> None:
    """Refuse repeated IDs, dependencies on missing IDs and cycles, naming row and field.

    Raises:
        CsvError: listing every problem.
    """
    problems = []
    first: dict[str, int] = {}
    for n, r in enumerate(rows, start=1):
        if r.id in first:
            problems.append(f"row {n}, field ID: {r.id!r} repeats row {first[r.id]}")
        first.setdefault(r.id, n)
    for n, r in enumerate(rows, start=1):
        for dep in r.dependencies:
            if dep not in first:
                problems.append(f"row {n}, field Dependencies: no task with ID {dep!r}")
            elif dep == r.id:
                problems.append(f"row {n}, field Dependencies: {r.id!r} depends on itself")
    if not problems:
        cycle = find_cycle({r.id: list(r.dependencies) for r in rows})
        if cycle:
            problems.append(
                f"row {first[cycle[0]]}, field Dependencies: dependency cycle {' -> '.join(cycle)}"
            )
    if problems:
        raise CsvError(problems)


def read_plan(path: Path) -> list[PlanRow]:
    """Every task of a plan CSV, validated as a whole.

    Raises:
        CsvError: naming each bad row and field; nothing of the plan is usable then.
    """
    rows = parse_rows(read_rows(path, COLUMNS, OPTIONAL_COLUMNS), plan_row)
    if not rows:
        raise CsvError([f"{path.name}: the plan has no tasks"])
    check_plan(rows)
    return rows


def task_id(plan_id: str, row_id: str) -> str:
    """The task id of a plan row: plans may reuse each other's IDs."""
    return f"{plan_id}/{row_id}"


def plan_events(plan_id: str, workspace: str, rows: Sequence[PlanRow]) -> list[TaskCreated]:
    """One ``task.created`` per row; ids are stable, so importing again changes nothing."""
    return [
        TaskCreated(
            event_id=f"plan-{workspace}-{task_id(plan_id, r.id)}",
            workspace=workspace,
            source="cli",
            task_id=task_id(plan_id, r.id),
            title=r.title,
            description=r.description,
            priority=r.priority,
            labels=plan_labels(r),
            dependencies=tuple(task_id(plan_id, d) for d in r.dependencies),
            plan_id=plan_id,
            team_estimate=r.estimate,
        )
        for r in rows
    ]


def plan_labels(row: PlanRow) -> tuple[str, ...]:
    """The Sprint and Assignee columns, kept on the task as ``sprint:…`` / ``assignee:…``."""
    labels = []
    if row.sprint:
        labels.append(f"sprint:{row.sprint}")
    if row.assignee:
        labels.append(f"assignee:{row.assignee}")
    return tuple(labels)


def team_critical_path(tasks: Sequence[Mapping[str, Any]]) -> tuple[list[str], float]:
    """The team's own critical path: the chain of open tasks, following dependencies,
    with the most points by the team's estimates (a task without one counts 0).

    Example:
        >>> row = lambda i, deps, pts: {  # noqa: E731
        ...     "task_id": i, "status": "backlog", "dependencies": deps, "team_estimate": pts
        ... }
        >>> team_critical_path([row("a", [], 5), row("b", [], 2), row("c", ["a", "b"], 3)])
        (['a', 'c'], 8.0)
    """
    open_ = {t["task_id"]: t for t in tasks if t["status"] != "completed"}
    finish: dict[str, float] = {}
    before: dict[str, str | None] = {}

    def visit(task_id: str) -> float:
        # Dependencies were checked acyclic on import; iterate to avoid deep recursion.
        stack = [task_id]
        while stack:
            current = stack[-1]
            deps = [d for d in open_[current]["dependencies"] if d in open_]
            pending = [d for d in deps if d not in finish]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if current in finish:
                continue
            last = max(deps, key=lambda d: finish[d], default=None)
            before[current] = last
            own = float(open_[current]["team_estimate"] or 0)
            finish[current] = (finish[last] if last else 0.0) + own
        return finish[task_id]

    for task_id in open_:
        visit(task_id)
    if not finish:
        return [], 0.0
    end: str | None = max(finish, key=lambda t: finish[t])
    length = finish[end] if end else 0.0
    path = []
    while end is not None:
        path.append(end)
        end = before[end]
    return path[::-1], length


async def _publish(events: list[TaskCreated]) -> int:
    s = settings()
    new = 0
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        for e in events:
            new += await client.publish(e)
    return new


@app.command("import")
def import_plan(
    file: Path = typer.Argument(..., help="CSV: ID,Title,Description,Estimate,Priority,…"),
    plan: str | None = typer.Option(None, "--plan", help="Plan id (default: the file name)."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Workspace."),
    as_json: bool = JsonOpt,
) -> None:
    """Validate a plan, then publish its tasks with their dependencies."""
    s = settings()
    plan_id = plan or file.stem
    try:
        rows = read_plan(file)
        events = plan_events(plan_id, workspace or s.workspace, rows)
    except CsvError as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    new = run(_publish(events))
    result = {"plan_id": plan_id, "tasks": len(events), "published": new}
    if as_json:
        emit_json(result)
    else:
        console.print(
            f"plan {plan_id}: {len(events)} tasks published ({len(events) - new} already known); "
            f"`tally plan show {plan_id}` once they are estimated"
        )


def print_plan(view: dict[str, Any]) -> None:
    """The plan as a table, then its critical path and forecast."""
    console.print(f"[bold]plan {view['plan_id']}[/]")
    console.print(
        f"  {'task':<24}{'team':>6}{'tally':>7}{'P50 h':>8}{'P90 h':>8}  status", highlight=False
    )
    for t in view["tasks"]:
        team = "-" if t["team_estimate"] is None else f"{t['team_estimate']:g}"
        pts = "-" if t["story_points"] is None else str(t["story_points"])
        p50 = "-" if t["hours_p50"] is None else f"{t['hours_p50']:.1f}"
        p90 = "-" if t["hours_p90"] is None else f"{t['hours_p90']:.1f}"
        console.print(
            f"  {t['task_id'][-24:]:<24}{team:>6}{pts:>7}{p50:>8}{p90:>8}  {t['status']}",
            highlight=False,
        )
    tot = view["totals"]
    console.print(
        f"[bold]points[/]  team {tot['team_points']:g}, Tally {tot['tally_points']:g} "
        f"({tot['completed']} of {tot['tasks']} tasks done, "
        f"{tot['pending_estimates']} awaiting an estimate)",
        highlight=False,
    )
    cp, team = view["critical_path"], view["team_critical_path"]
    points = {t["task_id"]: t["story_points"] or 0 for t in view["tasks"]}
    console.print(
        f"[bold]critical path, Tally's[/]  {' -> '.join(cp['tasks']) or '-'} "
        f"({cp['hours_p50']:.1f}h P50, {sum(points[t] for t in cp['tasks']):g} points)",
        highlight=False,
    )
    console.print(
        f"[bold]critical path, team's[/]   {' -> '.join(team['tasks']) or '-'} "
        f"({team['team_points']:g} points by the team, {team['tally_points']:g} by Tally)",
        highlight=False,
    )
    f = view["forecast_hours"]
    console.print(
        f"[bold]forecast[/]  done within {f['p50']:.1f}h (P50), {f['p85']:.1f}h (P85), "
        f"{f['p95']:.1f}h (P95) of work, with enough hands ({f['draws']:,} draws)",
        highlight=False,
    )


@app.command("show")
def show_plan(
    plan: str = typer.Argument(..., help="Plan id."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Workspace."),
    as_json: bool = JsonOpt,
) -> None:
    """Tally's estimate beside the team's, both critical paths and the completion forecast.

    The team's critical path follows the plan's dependencies weighted by the team's own
    estimates; Tally's, by its P50 hours.
    """
    view = reporter_get(f"/plans/{plan}", {"workspace": workspace})
    path, length = team_critical_path(view["tasks"])
    points = {t["task_id"]: t["story_points"] or 0 for t in view["tasks"]}
    view["team_critical_path"] = {
        "tasks": path,
        "team_points": length,
        "tally_points": sum(points[t] for t in path),
    }
    if as_json:
        emit_json(view)
    else:
        print_plan(view)
