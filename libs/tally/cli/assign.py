"""``tally assign --pending`` (batch plans) and ``tally experiment …`` (A/B experiments)."""

from __future__ import annotations

from typing import TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.table import Table

from tally.cli.common import EXIT_BAD_INPUT, JsonOpt, console, emit_json, fail, run, settings
from tally.client import TallyClient
from tally.events import Event
from tally.events.assign import (
    BatchReply,
    BatchRequest,
    Experiment,
    ExperimentReply,
    ExperimentRequest,
    Variant,
)
from tally.events.envelope import describe

R = TypeVar("R", bound=BaseModel)


async def _ask(event: Event, reply: type[R], timeout: float | None = None) -> R:
    s = settings()
    async with TallyClient.connect(
        s.nats_url, namespace=s.namespace, options=s.nats_options(), source="cli"
    ) as client:
        return await client.request(event, reply, step="assigner", timeout=timeout or s.timeout_s)


def parse_variants(specs: list[str], split: str | None) -> tuple[Variant, ...]:
    """Variants from ``NAME:strategy=STRATEGY`` options and a ``50/50`` split.

    Raises:
        ValueError: a malformed variant or split, naming it.
    """
    if len(specs) < 2:
        raise ValueError("--variant: an experiment needs at least two variants")
    weights = [1.0] * len(specs)
    if split:
        try:
            weights = [float(w) for w in split.split("/")]
        except ValueError:
            raise ValueError(f"--split {split!r}: numbers separated by '/', e.g. 50/50") from None
        if len(weights) != len(specs) or any(w <= 0 for w in weights):
            raise ValueError(f"--split {split!r}: one positive weight per variant ({len(specs)})")
    variants = []
    for spec, weight in zip(specs, weights, strict=True):
        name, sep, setting = spec.partition(":")
        key, eq, strategy = setting.partition("=")
        if not (sep and eq and key.strip() == "strategy" and name and strategy):
            raise ValueError(f"--variant {spec!r}: expected NAME:strategy=STRATEGY")
        try:
            variants.append(Variant(name=name, strategy=strategy, weight=weight))
        except ValidationError as exc:
            raise ValueError(describe(exc, f"--variant {spec!r}")) from None
    return tuple(variants)


experiment = typer.Typer(
    help="A/B experiments between assignment strategies.", no_args_is_help=True
)


def _print_experiments(reply: ExperimentReply) -> None:
    for e in reply.experiments:
        arms = ", ".join(f"{v.name}={v.strategy} ({v.weight:g})" for v in e.variants)
        scope = e.task_type or "all task types"
        state = "active" if e.active else "stopped"
        console.print(f"[bold]{e.name}[/] ({state}, {scope}): {arms}", highlight=False)


@experiment.command("create")
def experiment_create(
    name: str = typer.Argument(..., help="The experiment's name."),
    variant: list[str] = typer.Option(
        [], "--variant", help="NAME:strategy=STRATEGY (repeat for each arm)."
    ),
    split: str | None = typer.Option(None, "--split", help="Weights, e.g. 50/50 (default even)."),
    task_type: str | None = typer.Option(None, "--task-type", help="Only tasks of this type."),
    as_json: bool = JsonOpt,
) -> None:
    """Split new tasks between strategies; a task's arm follows from its id."""
    try:
        exp = Experiment(name=name, variants=parse_variants(variant, split), task_type=task_type)
    except ValidationError as exc:
        fail(describe(exc, "experiment"), code=EXIT_BAD_INPUT)
    except ValueError as exc:
        fail(str(exc), code=EXIT_BAD_INPUT)
    reply = run(_ask(ExperimentRequest(action="create", experiment=exp), ExperimentReply))
    if as_json:
        emit_json(reply)
    else:
        _print_experiments(reply)


@experiment.command("list")
def experiment_list(as_json: bool = JsonOpt) -> None:
    """Every experiment, active or stopped."""
    reply = run(_ask(ExperimentRequest(action="list"), ExperimentReply))
    if as_json:
        emit_json(reply)
    else:
        _print_experiments(reply)


@experiment.command("stop")
def experiment_stop(
    name: str = typer.Argument(..., help="The experiment to stop."), as_json: bool = JsonOpt
) -> None:
    """Stop assigning arms for an experiment (its past assignments keep theirs)."""
    reply = run(_ask(ExperimentRequest(action="stop", name=name), ExperimentReply))
    if as_json:
        emit_json(reply)
    else:
        _print_experiments(reply)


def _print_plan(reply: BatchReply, title: str) -> None:
    table = Table(title=f"{title} ({reply.method}), total value {reply.total_value:.0f}")
    for col in ("task", "model", "subscription", "tokens", "cost", "value", "status"):
        table.add_column(col, overflow="fold")
    for i in reply.items:
        table.add_row(
            i.task_id,
            i.model or "-",
            i.subscription or "-",
            f"{i.tokens:,}",
            f"${i.cost_usd:.4f}",
            f"{i.value:.0f}",
            i.status,
        )
    console.print(table)


def assign(
    pending: bool = typer.Option(
        False, "--pending", help="Plan every deferred task together (required)."
    ),
    strategy: str | None = typer.Option(None, "--strategy", help="Order of models per task."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; publish nothing."),
    limit: int = typer.Option(500, help="At most this many pending tasks, most valuable first."),
    as_json: bool = JsonOpt,
) -> None:
    """Assign pending tasks together, maximising total value under the remaining quotas."""
    if not pending:
        fail("nothing to assign: pass --pending", code=EXIT_BAD_INPUT)
    timeout = settings().timeout_s * 6
    plan = run(_ask(BatchRequest(strategy=strategy, limit=limit), BatchReply, timeout))
    if not as_json:
        _print_plan(plan, "plan")
    if dry_run or not any(i.model for i in plan.items):
        if as_json:
            emit_json({"plan": plan.model_dump(mode="json"), "committed": None})
        return
    done = run(
        _ask(BatchRequest(strategy=strategy, commit=True, plan=plan.items), BatchReply, timeout)
    )
    if as_json:
        emit_json({"plan": plan.model_dump(mode="json"), "committed": done.model_dump(mode="json")})
    else:
        _print_plan(done, "published")
