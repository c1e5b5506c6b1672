"""``tally lanes``: lane cycle times, work in progress and the open tasks' ETAs.

The reporter computes everything (``GET /lanes``); this command only asks and prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import typer
from rich.table import Table

from tally.cli.common import JsonOpt, console, emit_json, reporter_get


def hours_text(hours: float | None) -> str:
    """Hours for a person: ``—`` when unknown, minutes below an hour, days past two days.

    Example:
        >>> hours_text(0.75), hours_text(1.5), hours_text(60.0), hours_text(None)
        ('45m', '1.5h', '2.5d', '—')
    """
    if hours is None:
        return "—"
    if hours < 1:
        return f"{hours * 60:.0f}m"
    return f"{hours / 24:.1f}d" if hours >= 48 else f"{hours:.1f}h"


def lanes_table(body: Mapping[str, Any]) -> Table:
    """One row per lane (and ``blocked``): tasks that left it, mean/p50/p85, WIP now."""
    table = Table(title=f"lanes since {body['since'][:16]}Z")
    for col in ("lane", "done", "mean", "p50", "p85", "WIP", "WIP time"):
        table.add_column(col, justify="left" if col == "lane" else "right")
    for lane, row in body["lanes"].items():
        table.add_row(
            lane,
            str(row["count"]),
            hours_text(row["mean_hours"]),
            hours_text(row["p50_hours"]),
            hours_text(row["p85_hours"]),
            str(row["wip"]),
            hours_text(row["wip_hours"]),
        )
    return table


def etas_table(body: Mapping[str, Any]) -> Table:
    """One row per open task, soonest first: its lane, time there, queue ahead and ETA."""
    table = Table(title="open tasks")
    for col in ("task", "title", "lane", "in lane", "ahead", "ETA"):
        table.add_column(col, justify="right" if col in ("in lane", "ahead", "ETA") else "left")
    table.add_column("due (UTC)", no_wrap=True)
    for e in body["etas"]:
        lane = f"{e['lane']} (blocked)" if e["blocked"] else e["lane"]
        due = (e["eta_at"] or "no history yet")[:16].replace("T", " ")
        table.add_row(
            e["task_id"],
            e["title"] or "",
            lane,
            hours_text(e["spent_hours"]) + (" overdue" if e["overdue"] else ""),
            str(e["wip_ahead"]),
            hours_text(e["eta_hours"]),
            due,
        )
    return table


def lanes(
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace."),
    since: str = typer.Option("30d", help="Window start: 30d, 12h, 2w or an ISO date."),
    limit: int | None = typer.Option(
        None, "--limit", help="ETAs to show, soonest first (the reporter's default: 100)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Cycle time per lane (work, review, QA, blocked), WIP, and an ETA per open task."""
    asked = {"since": since, "workspace": workspace, "limit": None if limit is None else str(limit)}
    body = reporter_get("/lanes", asked)
    if as_json:
        emit_json(body)
        return
    console.print(lanes_table(body))
    if body["etas"]:
        console.print(etas_table(body))
        total = body.get("etas_total", len(body["etas"]))
        if total > len(body["etas"]):
            shown = len(body["etas"])
            console.print(f"the {shown} due soonest of {total:,} open tasks (--limit for more)")
    else:
        console.print("no open tasks", highlight=False)
