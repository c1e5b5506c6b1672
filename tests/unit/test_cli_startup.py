"""``tally --help`` lists every command without importing them; each command imports only
what it uses (the servers' drivers and the services stay out of the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer.main

from tally.cli import main

HEAVY = (
    "sqlalchemy",
    "asyncpg",
    "faststream",
    "redis",
    "numpy",
    "scipy",
    "sklearn",
    "uvicorn",
    "fastapi",
    "services",
)

PROBE = """
import json, sys
from tally.cli.main import app
try:
    app(sys.argv[1:])
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)))
"""


def imported(*args: str) -> set[str]:
    """The modules loaded by a fresh interpreter running ``tally ARGS``."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True
    ).stdout
    return {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}


def test_help_imports_no_command_and_nothing_heavy() -> None:
    loaded = imported("--help")
    assert not loaded & {*HEAVY, "nats", "pydantic", "structlog", "rich"}, loaded
    modules = json.loads(
        subprocess.run(
            [sys.executable, "-c", PROBE, "--help"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[-1]
    )
    assert [m for m in modules if m.startswith("tally.")] == ["tally.cli", "tally.cli.main"]


@pytest.mark.parametrize("command", [["task", "create", "--help"], ["tokens", "--help"]])
def test_a_command_imports_what_it_uses_only(command: list[str]) -> None:
    assert not imported(*command) & set(HEAVY)


@pytest.mark.parametrize("name", list(main.COMMANDS))
def test_the_listing_is_each_commands_own_help(name: str) -> None:
    command = main.load_command(name)
    own = command.short_help or (command.help or "").split("\n\n")[0].replace("\n", " ")
    assert main.COMMANDS[name][2] == own.strip()
    assert command.name == name


def test_every_command_still_runs_from_the_group() -> None:
    group = typer.main.get_command(main.app)
    ctx = group.make_context("tally", ["task", "create", "--help"], resilient_parsing=True)
    name, command, _ = group.resolve_command(ctx, ["task", "create"])
    assert name == "task" and command is not None and "create" in command.commands


@pytest.mark.parametrize("name", ["serve", "tokens", "estimate"])
def test_a_command_has_its_own_options_only(name: str) -> None:
    options = {o for p in main.load_command(name).params for o in p.opts}
    assert "--install-completion" not in options  # the root command's, not each one's
