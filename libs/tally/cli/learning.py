"""``tally velocity``, ``tally models`` and ``tally experiment show``: what the learner knows.

The learner answers ``learner.report`` requests over NATS; these commands ask it and
print the answer as tables, or as JSON with ``--json``.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient
from tally.events.learning import LearnerReport, LearnerReportRequest, ReportKind

WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace (default: TALLY_WORKSPACE).")


def _ask(kind: ReportKind, workspace: str | None, **fields: Any) -> dict[str, Any]:
    s = settings()

    async def go() -> LearnerReport:
        async with TallyClient.connect(
            s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
        ) as c:
            request = LearnerReportRequest(kind=kind, workspace=workspace or s.workspace, **fields)
            return await c.request(request, LearnerReport, step="learner", timeout=s.timeout_s)

    return run(go()).data


def _num(value: Any, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def velocity(
    days: int = typer.Option(30, "--days", help="Days of velocity trend to show."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Velocity trend, model comparison and the accuracy of the last 20 estimates."""
    if days < 1:
        fail(f"--days must be at least 1, got {days}", code=EXIT_BAD_INPUT)
    data = _ask("velocity", workspace, days=days)
    if as_json:
        emit_json(data)
        return
    trend = Table(title=f"velocity, last {days} days (points/hour)")
    for col in ("day", "runs", "velocity", "hours error %"):
        trend.add_column(col, justify="left" if col == "day" else "right")
    for r in data["trend"]:
        trend.add_row(
            r["day"], str(r["runs"]), _num(r["velocity_mean"]), _num(r["error_pct_mean"], ".1f")
        )
    console.print(trend)
    models = Table(title="models")
    for col in ("model", "velocity", "quality", "success", "$/point", "best band", "runs"):
        models.add_column(col, justify="left" if col in ("model", "best band") else "right")
    for m in data["models"]:
        models.add_row(
            m["model"],
            _num(m["velocity_mean"]),
            _num(m["quality_mean"]),
            _num(m["success_rate"], ".0%"),
            _num(m["cost_per_point"], ".4f"),
            m["best_band"] or "—",
            str(m["samples"]),
        )
    console.print(models)
    acc = data["accuracy"]
    direction = {True: "improving", False: "not improving", None: "too few tasks to tell"}
    console.print(
        f"estimation accuracy, last {acc['tasks']} tasks: mean error "
        f"{_num(acc['mean_error_pct'], '.1f')}% (before: {_num(acc['previous_error_pct'], '.1f')}%)"
        f", {direction[acc['improving']]}",
        highlight=False,
    )


def models(workspace: str | None = WorkspaceOpt, as_json: bool = JsonOpt) -> None:
    """Learned scores per model, task type and band, and the current routing policy."""
    data = _ask("models", workspace)
    if as_json:
        emit_json(data)
        return
    scores = Table(title="scores")
    cols = ("model", "type", "band", "runs", "velocity", "quality", "success", "$/run", "$/point")
    for col in cols:
        scores.add_column(col, justify="left" if col in cols[:3] else "right")
    for s in data["scores"]:
        scores.add_row(
            s["model"],
            s["task_type"],
            s["band"],
            str(s["samples"]),
            _num(s["velocity_mean"]),
            _num(s["quality_mean"]),
            _num(s["success_rate"], ".0%"),
            _num(s["cost_mean"], ".4f"),
            _num(s["cost_per_point"], ".4f"),
        )
    console.print(scores)
    policy = data["policy"]
    console.print(f"[bold]routing policy[/] version {policy['version']}")
    for key, probs in policy["probabilities"].items():
        ranked = sorted(probs.items(), key=lambda kv: -kv[1])
        shares = ", ".join(f"{m} {p:.0%}" for m, p in ranked)
        console.print(f"  {key}: {shares}", highlight=False)


def experiment_show(
    name: str = typer.Argument(..., help="The experiment's name."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A/B analysis of an experiment (Welch's t-test per metric) and the held-out check."""
    data = _ask("experiment", workspace, experiment=name)
    if as_json:
        emit_json(data)
        return
    if data["known"] is False:
        fail(f"no experiment named {name!r}", code=EXIT_BAD_INPUT)
    arms = ", ".join(
        f"{a}: {v['runs']} runs, {v['success_rate']:.0%} solved" for a, v in data["arms"].items()
    )
    console.print(f"[bold]experiment {name}[/] — {arms or 'no runs yet'}", highlight=False)
    table = Table()
    for col in ("metric", "arms", "mean A", "mean B", "p", "effect (g)", "n", "verdict"):
        table.add_column(col, justify="left" if col in ("metric", "arms", "verdict") else "right")
    for c in data["comparisons"]:
        table.add_row(
            c["metric"],
            f"{c['a']} vs {c['b']}",
            _num(c["mean_a"], ".3f"),
            _num(c["mean_b"], ".3f"),
            _num(c["p_value"], ".3g") if not isinstance(c["p_value"], str) else c["p_value"],
            _num(c["hedges_g"], ".2f") if not isinstance(c["hedges_g"], str) else c["hedges_g"],
            f"{c['n_a']}/{c['n_b']}",
            c["verdict"],
        )
    console.print(table)
    held = data["held_out"]
    console.print(
        f"held-out tasks ({held['runs']} runs), expected reward net of cost: learned policy "
        f"{_num(held['policy'], '.3f')}, best single model ({held['best_model'] or '—'}) "
        f"{_num(held['best_single'], '.3f')}, uniform {_num(held['uniform'], '.3f')}",
        highlight=False,
    )
