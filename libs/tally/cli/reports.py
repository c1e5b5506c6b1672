"""``tally report``: a run's KPI summary from the reporter."""

from __future__ import annotations

import typer
from rich.table import Table

from tally.cli.common import JsonOpt, console, emit_json, reporter_get


def report(
    run_id: str = typer.Argument(..., help="The run to summarise."),
    as_json: bool = JsonOpt,
) -> None:
    """Print a run's 10-line KPI summary (``--json``: the full kpi.json)."""
    body = reporter_get(f"/runs/{run_id}/kpi")
    if as_json:
        emit_json(body)
        return
    state = body.get("outcome") or "in progress"
    console.print(f"[bold]run {run_id}[/] ({state})")
    for line in body["summary"]:
        console.print(f"  {line}", highlight=False)


def tokens(
    since: str = typer.Option("7d", help="Window start: 7d, 12h, 2w or an ISO date."),
    by: str = typer.Option("model", help="Group by model, command, agent, task or provider."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace."),
    as_json: bool = JsonOpt,
) -> None:
    """Token use: input, output, cached (read/write), reasoning, cost and call time."""
    params = {"since": since, "by": by}
    if workspace:
        params["workspace"] = workspace
    body = reporter_get("/tokens", params)
    if as_json:
        emit_json(body)
        return
    table = Table(title=f"tokens since {body['since'][:16]}Z by {by}")
    for col in (
        by,
        "calls",
        "input",
        "output",
        "cache read",
        "cache write",
        "reasoning",
        "cost $",
        "time",
    ):
        table.add_column(col, justify="left" if col == by else "right")
    for r in body["rows"]:
        table.add_row(
            str(r["key"]),
            f"{r['calls']:,}",
            f"{r['input_tokens']:,}",
            f"{r['output_tokens']:,}",
            f"{r['cache_read_tokens']:,}",
            f"{r['cache_write_tokens']:,}",
            f"{r['reasoning_tokens']:,}",
            f"{r['cost_usd']:.4f}",
            f"{r['duration_ms'] / 1000:.1f}s",
        )
    console.print(table)
