"""The ``tally`` command: create tasks, replay runs, read reports, run the services.

Each command's module is imported only when that command runs: ``tally --help`` imports
typer and nothing of Tally's, and ``tally task create`` imports what creating a task needs
(the NATS client and the event models), not the database, Redis or the services. The
listing shown by ``--help`` comes from :data:`COMMANDS` (a unit test checks that each line
there is the command's own help).
"""

from __future__ import annotations

import importlib
from typing import Any

import typer
import typer.main
from typer.core import TyperCommand, TyperGroup

#: typer's own click (typer ships it; no other click is loaded)
Command = Any
Context = Any

#: name -> (module under ``tally.cli``, attribute: a Typer group or a command function,
#: the one-line help ``tally --help`` lists), in the order ``--help`` lists them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "report": ("reports", "report", "Print a run's 10-line KPI summary (``--json``: the full kpi.json)."),  # noqa: E501
    "tokens": ("reports", "tokens", "Token use: input, output, cached (read/write), reasoning, cost and call time."),  # noqa: E501
    "export": ("export", "export", "Write every matching row, oldest first, following the reporter's pages to the end."),  # noqa: E501
    "lanes": ("lanes", "lanes", "Cycle time per lane (work, review, QA, blocked), WIP, and an ETA per open task."),  # noqa: E501
    "serve": ("ops", "serve", "Run one service in this process (scale by running more of them)."),
    "up": ("ops", "up", "Run all six services in one process, for development."),
    "estimate": ("estimate", "estimate", "Estimate a task without creating it: points, hours, tokens, value and evidence."),  # noqa: E501
    "velocity": ("learning", "velocity", "Velocity trend, model comparison and the accuracy of the last 20 estimates."),  # noqa: E501
    "models": ("learning", "models", "Learned scores per model, task type and band, and the current routing policy."),  # noqa: E501
    "assign": ("assign", "assign", "Assign pending tasks together, maximising total value under the remaining quotas."),  # noqa: E501
    "task": ("tasks", "app", "Create tasks and follow them through estimation and assignment."),
    "run": ("runs", "app", "Publish and inspect agent runs."),
    "db": ("ops", "db", "The Postgres schema."),
    "streams": ("ops", "streams", "The JetStream streams."),
    "dlq": ("dlq", "app", "Dead letters: messages a service could not process, newest first; replay them."),  # noqa: E501
    "history": ("history", "app", "Completed tasks the estimator learns from."),
    "plan": ("plans", "app", "Import a team's plan and compare it with Tally's."),
    "quota": ("quota", "app", "Quota: each subscription's use and remaining allowance, the freeze switch, and rebuilding Redis from the ledger."),  # noqa: E501
    "experiment": ("assign", "experiment", "A/B experiments between assignment strategies."),
    "schema": ("schema", "app", "The bus contract: AsyncAPI and JSON Schema documents."),
    "nats": ("security", "nats", "The bus's users and what each may publish and read."),
    "secrets": ("security", "secrets_app", "Passwords for a deployment (.env)."),
    "token": ("tokens", "app", "API tokens of the reporter's HTTP API (needs an admin token)."),
    "learn": ("learn", "app", "Learning jobs: train, evaluate and promote routing policies."),
}  # fmt: skip


def load_command(name: str) -> Command:
    """The click command ``name`` stands for, importing its module now."""
    module, attribute, _ = COMMANDS[name]
    target = getattr(importlib.import_module(f"tally.cli.{module}"), attribute)
    if name == "experiment":
        # `experiment show` reads the learner's analysis: it lives with the other reports.
        learning = importlib.import_module("tally.cli.learning")
        if not any(c.name == "show" for c in target.registered_commands):
            target.command("show")(learning.experiment_show)
    command: Command
    if isinstance(target, typer.Typer):
        command = typer.main.get_group(target)  # a group even with one command (`db`)
    else:
        single = typer.Typer(add_completion=False)
        single.command(name)(target)
        command = typer.main.get_command(single)
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """A group whose subcommands are imported when one of them runs (or is asked for
    help), and listed from :data:`COMMANDS` without importing them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaded: dict[str, Command] = {}
        self._resolving = False

    def list_commands(self, ctx: Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name not in COMMANDS:
            return None
        if cmd_name in self._loaded:
            return self._loaded[cmd_name]
        if not self._resolving:
            # Listed only (``tally --help``, completion): a stand-in with the one-line help.
            return TyperCommand(cmd_name, short_help=COMMANDS[cmd_name][2])
        self._loaded[cmd_name] = command = load_command(cmd_name)
        return command

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        self._resolving = True
        try:
            return super().resolve_command(ctx, args)
        finally:
            self._resolving = False


app = typer.Typer(
    cls=LazyGroup,
    # Plain help for the listing: rich's renderer (markdown, syntax highlighting) costs
    # more to import than the rest of ``tally --help``; each command keeps rich help.
    rich_markup_mode=None,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def tally() -> None:
    """Tally: estimates, model assignment under quota, run records and reports for
    AI-agent work. Connection settings come from TALLY_NATS_URL, TALLY_DATABASE_URL,
    TALLY_REDIS_URL and TALLY_REPORTER_URL; TALLY_API_TOKEN is the reporter API's token."""


if __name__ == "__main__":
    app()
