"""The ``tally`` command: create tasks, replay runs, read reports, run the services."""

from __future__ import annotations

import typer

from tally.cli import (
    assign,
    dlq,
    estimate,
    export,
    history,
    lanes,
    learn,
    learning,
    ops,
    plans,
    quota,
    reports,
    runs,
    schema,
    security,
    tasks,
    tokens,
)

app = typer.Typer(
    help="Tally: estimates, model assignment under quota, run records and reports for "
    "AI-agent work. Connection settings come from TALLY_NATS_URL, TALLY_DATABASE_URL, "
    "TALLY_REDIS_URL and TALLY_REPORTER_URL; TALLY_API_TOKEN is the reporter API's token.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(tasks.app, name="task")
app.add_typer(runs.app, name="run")
app.add_typer(ops.db, name="db")
app.add_typer(ops.streams, name="streams")
app.command("report")(reports.report)
app.command("tokens")(reports.tokens)
app.command("export")(export.export)
app.command("lanes")(lanes.lanes)
app.add_typer(dlq.app, name="dlq")
app.command("serve")(ops.serve)
app.command("up")(ops.up)
app.command("estimate")(estimate.estimate)
app.add_typer(history.app, name="history")
app.add_typer(plans.app, name="plan")
app.command("velocity")(learning.velocity)
app.command("models")(learning.models)

app.add_typer(quota.app, name="quota")
app.command("assign")(assign.assign)
assign.experiment.command("show")(learning.experiment_show)
app.add_typer(assign.experiment, name="experiment")
app.add_typer(schema.app, name="schema")
app.add_typer(security.nats, name="nats")
app.add_typer(security.secrets_app, name="secrets")
app.add_typer(tokens.app, name="token")
app.add_typer(learn.app, name="learn")

if __name__ == "__main__":
    app()
