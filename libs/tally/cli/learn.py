"""``tally learn start|status|list|cancel|promote|report``: learning jobs.

The learner owns the jobs; these commands send it ``learner.job.command`` requests over
NATS and print its answer (tables, or JSON with ``--json``).

Example:
    tally learn start --window 30d --reward outcome_shaped --lr 0.1 --wait
"""

from __future__ import annotations

import time
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient
from tally.events.jobs import FINAL, JobConfig, LearningJobCommand, LearningJobReply

app = typer.Typer(help="Learning jobs: train, evaluate and promote routing policies.")
WorkspaceOpt = typer.Option(None, "--workspace", "-w", help="Workspace (default: TALLY_WORKSPACE).")


def _send(action: str, workspace: str | None, **fields: Any) -> list[dict[str, Any]]:
    s = settings()

    async def go() -> LearningJobReply:
        async with TallyClient.connect(
            s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
        ) as c:
            command = LearningJobCommand(
                action=action,
                workspace=workspace or s.workspace,
                **fields,
            )
            return await c.request(command, LearningJobReply, step="learner", timeout=s.timeout_s)

    return run(go()).jobs


def _num(value: Any, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def _weights(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            out[name] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            fail(f"--weight: expected NAME=NUMBER, got {item!r}", code=EXIT_BAD_INPUT)
    return out


@app.command("start")
def start(
    window: str = typer.Option("30d", help="Recorded runs of the last 30d, 12h, 2w…"),
    reward: str = typer.Option("outcome_shaped", help="Reward function from the registry."),
    weight: list[str] = typer.Option(
        [], "--weight", help="A shaped reward's weight, NAME=NUMBER (repeatable)."
    ),
    task_class: list[str] = typer.Option(
        [], "--task-class", help="Only this task type or type|band (repeatable)."
    ),
    model: list[str] = typer.Option([], "--model", help="Only this model's runs (repeatable)."),
    lr: float = typer.Option(0.5, "--lr", help="Learning rate."),
    clip: float = typer.Option(0.2, help="Largest logit step of one update."),
    exploration: float = typer.Option(0.1, help="Exploration floor in [0, 1]."),
    gamma: float = typer.Option(0.9, help="Discount of credit across a task's attempts."),
    group_size: int = typer.Option(4, "--group-size", help="Runs compared in one group."),
    iterations: int = typer.Option(50, help="Iterations (one group per task class each)."),
    eval_share: float = typer.Option(0.2, "--eval-share", help="Share of tasks held out."),
    eval_every: int = typer.Option(10, "--eval-every", help="Evaluate and checkpoint every N."),
    budget_usd: float | None = typer.Option(None, "--budget-usd", help="Compute budget ($)."),
    priority: str = typer.Option("P1", help="P0 (first), P1 or P2."),
    auto_promote: bool = typer.Option(
        False, "--auto-promote", help="Promote if significantly better than the live policy."
    ),
    name: str | None = typer.Option(None, help="A name for the job."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job to its end; print the report."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Queue a learning job; with ``--wait``, follow it and print its report."""
    try:
        config = JobConfig(
            window=window,
            reward=reward,
            reward_weights=_weights(weight),
            task_classes=tuple(task_class),
            models=tuple(model),
            lr=lr,
            clip=clip,
            exploration=exploration,
            gamma=gamma,
            group_size=group_size,
            iterations=iterations,
            eval_share=eval_share,
            eval_every=eval_every,
            budget_usd=budget_usd,
            priority=priority,
            auto_promote=auto_promote,
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "config"
        fail(f"--{field.replace('_', '-')}: {err['msg']}", code=EXIT_BAD_INPUT)
    job = _send("start", workspace, config=config, name=name)[0]
    if not wait:
        if as_json:
            emit_json(job)
        else:
            console.print(f"queued {job['job_id']} ({job['priority']})", highlight=False)
        return
    while job["status"] not in FINAL:
        time.sleep(1.0)
        job = _send("get", workspace, job_id=job["job_id"])[0]
        if not as_json:
            console.print(
                f"{job['job_id']} {job['status']} iteration {job['iteration']}/{job['iterations']}",
                highlight=False,
            )
    _show_report(job, as_json)
    if job["status"] != "completed":
        raise typer.Exit(1)


@app.command("status")
def status(
    job_id: str = typer.Argument(..., help="The job's id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Where a job is: status, iteration, progress, budget, checkpoints."""
    job = _send("get", workspace, job_id=job_id)[0]
    if as_json:
        emit_json(job)
        return
    p = job["progress"]
    console.print(
        f"[bold]{job['job_id']}[/] {job['status']} ({job['priority']}), iteration "
        f"{job['iteration']}/{job['iterations']}, objective {_num(p.get('objective'))}, "
        f"reward {_num(p.get('reward_mean'))}, advantage std {_num(p.get('advantage_std'))}",
        highlight=False,
    )
    budget = job["budget_usd"]
    console.print(
        f"spent ${job['spent_usd']:.6f}"
        + (f" of ${budget}" if budget else " (no budget)")
        + (f", alerts at {', '.join(job['budget_alerts'])}" if job["budget_alerts"] else ""),
        highlight=False,
    )
    if job["error"]:
        console.print(f"[red]{job['error']}[/]", highlight=False)
    for c in job.get("checkpoints", []):
        console.print(
            f"  checkpoint {c['id']} at iteration {c['iteration']}: score {_num(c['score'])}"
        )


@app.command("list")
def list_jobs(
    status: str | None = typer.Option(None, help="Only jobs in this status."),
    limit: int = typer.Option(50, min=1, max=1000, help="Newest first, at most this many."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The workspace's learning jobs, newest first."""
    jobs = _send("list", workspace, status=status, limit=limit)
    if as_json:
        emit_json(jobs)
        return
    table = Table()
    for col in ("job", "name", "priority", "status", "iteration", "objective", "created"):
        table.add_column(col)
    for j in jobs:
        table.add_row(
            j["job_id"],
            j["name"] or "",
            j["priority"],
            j["status"],
            f"{j['iteration']}/{j['iterations']}",
            _num(j["progress"].get("objective")),
            j["created_at"][:19],
        )
    console.print(table)


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help="The job's id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Stop a job: a queued one at once, a running one at its next iteration."""
    job = _send("cancel", workspace, job_id=job_id)[0]
    if as_json:
        emit_json(job)
        return
    state = "cancelled" if job["status"] == "cancelled" else f"{job['status']}, stopping"
    console.print(f"{job_id}: {state}", highlight=False)


@app.command("promote")
def promote(
    job_id: str = typer.Argument(..., help="A completed job's id."),
    note: str = typer.Option(..., "--note", help="Why it is promoted (kept with it)."),
    by: str | None = typer.Option(None, "--by", help="Who promotes it (default: cli)."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Publish the job's best checkpoint as the workspace's live routing policy."""
    job = _send("promote", workspace, job_id=job_id, by=by, note=note)[0]
    if as_json:
        emit_json(job)
        return
    p = job["promoted"]
    console.print(
        f"{job_id}: live policy version {p['version']} (checkpoint at iteration "
        f"{p['iteration']}), by {p['by']}: {p['note']}",
        highlight=False,
    )


@app.command("report")
def report(
    job_id: str = typer.Argument(..., help="The job's id."),
    workspace: str | None = WorkspaceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A finished job's report: the candidate against the live policy and baselines."""
    _show_report(_send("report", workspace, job_id=job_id)[0], as_json)


def _show_report(job: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(job)
        return
    rep = job.get("report")
    if not rep:
        console.print(f"{job['job_id']} is {job['status']}: no report", highlight=False)
        if job.get("error"):
            console.print(f"[red]{job['error']}[/]", highlight=False)
        return
    s, ev = rep["summary"], rep["evaluation"]
    console.print(
        f"[bold]{job['job_id']}[/] completed: {rep['iterations']} iterations on {rep['runs']} "
        f"runs; held-out {ev['held_out_runs']} runs ({ev['logged_runs']} with propensities, "
        f"estimator {ev['method']})",
        highlight=False,
    )
    table = Table()
    for col in ("policy", "reward", "success", "cost $/run"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    for name, est in ev["policies"].items():
        table.add_row(name, _num(est["reward"]), _num(est["success"], ".1%"), _num(est["cost_usd"]))
    console.print(table)
    verdict = "significantly better" if s["significantly_better"] else "not significantly better"
    console.print(
        f"candidate vs live: p = {_num(s['p_value'], '.3g')} (Welch) — {verdict}",
        highlight=False,
    )
