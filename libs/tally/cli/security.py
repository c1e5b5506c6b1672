"""``tally nats …`` and ``tally secrets …``: bus users, their permissions and passwords."""

from __future__ import annotations

import secrets
import string
from pathlib import Path

import typer

from tally.cli.common import EXIT_BAD_INPUT, console, fail
from tally.natsconfig import ROLES, password_variable, server_config

nats = typer.Typer(help="The bus's users and what each may publish and read.", no_args_is_help=True)
secrets_app = typer.Typer(help="Passwords for a deployment (.env).", no_args_is_help=True)

#: Variables ``docker-compose.yml`` reads from ``.env`` besides the NATS passwords.
DEPLOY_SECRETS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD")
_ALPHABET = string.ascii_letters + string.digits


def new_password(length: int = 32) -> str:
    """A random password of letters and digits, starting with a letter (the NATS
    configuration reads it unquoted from the environment, where a leading digit would
    make it a number)."""
    return secrets.choice(string.ascii_letters) + "".join(
        secrets.choice(_ALPHABET) for _ in range(length - 1)
    )


def env_file_text() -> str:
    """A fresh ``.env``: one random password per deployment secret and bus user."""
    names = [*DEPLOY_SECRETS, *(password_variable(role) for role in ROLES)]
    lines = [
        "# Tally deployment secrets, made by `tally secrets init`. Keep this file private",
        "# (it is in .gitignore); docker compose reads it.",
        *(f"{name}={new_password()}" for name in names),
    ]
    return "\n".join(lines) + "\n"


def read_env(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of an env file (comments and blank lines skipped)."""
    values = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#"):
            values[name.strip()] = value.strip()
    return values


@nats.command("config")
def config(
    namespace: str = typer.Option("", help="Subjects under this namespace (TALLY_NAMESPACE)."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write here, not to stdout."),
    auth_only: bool = typer.Option(
        False, "--auth-only", help="Only the authorization block, to include in a cluster's."
    ),
) -> None:
    """The NATS server configuration: one user per service and client role, each allowed
    only the subjects its role publishes and reads (derived from the bus contract)."""
    text = server_config(namespace, auth_only=auth_only)
    if out is None:
        typer.echo(text, nl=False)
        return
    out.write_text(text)
    console.print(f"wrote {out}")


@nats.command("creds")
def creds(
    role: str = typer.Argument(..., help=f"One of: {', '.join(ROLES)}."),
    env_file: Path = typer.Option(Path(".env"), help="The file `tally secrets init` wrote."),
) -> None:
    """Print ``TALLY_NATS_USER``/``TALLY_NATS_PASSWORD`` lines for ROLE (to ``export``)."""
    if role not in ROLES:
        fail(f"role: unknown role {role!r}; one of {', '.join(ROLES)}", code=EXIT_BAD_INPUT)
    if not env_file.exists():
        fail(f"{env_file} does not exist: run `tally secrets init` first", code=EXIT_BAD_INPUT)
    password = read_env(env_file).get(password_variable(role))
    if not password:
        fail(f"{env_file} has no {password_variable(role)}", code=EXIT_BAD_INPUT)
    typer.echo(f"TALLY_NATS_USER={role}\nTALLY_NATS_PASSWORD={password}")


@secrets_app.command("init")
def init(
    env_file: Path = typer.Option(Path(".env"), help="Where to write the secrets."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write random passwords for Postgres, Redis, Grafana and every bus user to .env."""
    if env_file.exists() and not force:
        fail(f"{env_file} exists; pass --force to replace its passwords", code=EXIT_BAD_INPUT)
    env_file.write_text(env_file_text())
    env_file.chmod(0o600)
    console.print(f"wrote {env_file} (readable by you only)")
