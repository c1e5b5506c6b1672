"""``tally report``: a run's KPI summary from the reporter."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from tally.cli.common import JsonOpt, console, emit_json, reporter_get
from tally.money import usd_text


def report(
    run_id: str = typer.Argument(..., help="The run to summarise."),
    compare_with: str | None = typer.Option(
        None, "--compare", metavar="RUN_B", help="Side by side with RUN_B, and the change to it."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Print a run's 10-line KPI summary (``--json``: the full kpi.json).

    With ``--compare RUN_B``: both runs' KPIs side by side and what changed from this run
    to RUN_B (``--json``: both kpi.json documents and every numeric difference and ratio).
    """
    if compare_with:
        compare(run_id, compare_with, as_json=as_json)
        return
    body = reporter_get(f"/runs/{run_id}/kpi")
    if as_json:
        emit_json(body)
        return
    state = body.get("outcome") or "in progress"
    console.print(f"[bold]run {run_id}[/] ({state})")
    for line in body["summary"]:
        console.print(f"  {line}", highlight=False)


def compare(run_a: str, run_b: str, *, as_json: bool = False) -> None:
    """Print two runs' KPIs in two columns with the difference ``b - a`` beside them."""
    body = reporter_get("/compare", {"a": run_a, "b": run_b})
    if as_json:
        emit_json(body)
        return
    a, b = body["a"], body["b"]
    table = Table(
        title=f"run {run_a} ({a.get('outcome') or 'in progress'}) vs "
        f"run {run_b} ({b.get('outcome') or 'in progress'})"
    )
    table.add_column("metric")
    for col in (run_a, run_b, "change (B - A)"):
        table.add_column(col, justify="right")
    for row in body["rows"]:
        table.add_row(row["metric"], row["a"], row["b"], row["delta"])
    console.print(table)


def tokens(
    since: str = typer.Option("7d", help="Window start: 7d, 12h, 2w or an ISO date."),
    by: str = typer.Option("model", help="Group by model, command, agent, task or provider."),
    workspace: str | None = typer.Option(None, "--workspace", "-w", help="Only this workspace."),
    limit: int = typer.Option(
        100, min=1, max=1000, help="Show the groups of highest cost, at most this many."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Token use: input, output, cached (read/write), reasoning, cost and call time."""
    body = reporter_get(
        "/tokens", {"since": since, "by": by, "workspace": workspace, "limit": str(limit)}
    )
    if as_json:
        emit_json(body)
        return
    if not body["rows"]:
        where = f" in workspace {workspace}" if workspace else ""
        console.print(
            f"no token use recorded since {body['since'][:16]}Z{where}. Try a longer window "
            "(--since 30d), another --workspace, or check that runs are reported "
            "(`tally run show RUN`, `tally dlq`).",
            highlight=False,
        )
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
        "cost",
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
            _cost_cell(r),
            f"{r['duration_ms'] / 1000:.1f}s",
        )
    console.print(table)
    if body.get("more"):
        console.print(
            f"the {len(body['rows']):,} of {body['groups']:,} groups of highest cost; "
            "--limit shows more (up to 1,000), `tally export token_usage` every call."
        )
    unpriced = sum(int(r.get("unpriced_calls") or 0) for r in body["rows"])
    if unpriced:
        console.print(
            f"* {unpriced:,} calls had no known price (cost_known = false): not in the cost; "
            "quota charged them at the subscription's fallback price. Add their model to "
            "deploy/config/models.yaml."
        )


def _cost_cell(row: dict[str, Any]) -> str:
    """Dollars rounded for people, from the exact micros; ``*`` marks unpriced calls."""
    micros = row.get("cost_micros")
    text = usd_text(int(micros)) if micros is not None else f"${row['cost_usd']:.4f}"
    unpriced = int(row.get("unpriced_calls") or 0)
    return f"{text} ({unpriced} unpriced*)" if unpriced else text
