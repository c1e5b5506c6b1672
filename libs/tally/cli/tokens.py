"""``tally token``: create, list and revoke the reporter's API tokens.

These call the reporter's ``/auth/tokens`` with ``TALLY_API_TOKEN``, which must hold the
``admin`` scope (the reporter is the only writer of its token table). The first token
is made with the reporter's bootstrap token: start the reporter with
``TALLY_REPORTER_BOOTSTRAP_TOKEN`` set, run ``TALLY_API_TOKEN=<that> tally token create
--name ops --workspace '*' --scope admin``, then unset the bootstrap token.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from tally.cli.common import JsonOpt, console, emit_json, reporter_call

app = typer.Typer(help="API tokens of the reporter's HTTP API (needs an admin token).")

SCOPES = (
    "tasks:write",
    "runs:read",
    "reports:read",
    "export",
    "quota:admin",
    "experiments:admin",
    "learning:admin",
    "admin",
)


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="What the token is for.")],
    workspace: Annotated[
        str, typer.Option("--workspace", help="The workspace it sees, or '*' for all.")
    ],
    scope: Annotated[
        list[str],
        typer.Option("--scope", help=f"A scope (repeat for more): {', '.join(SCOPES)}."),
    ],
    days: Annotated[
        float | None, typer.Option("--days", help="Days until it expires (default 90).")
    ] = 90,
    never_expires: Annotated[
        bool, typer.Option("--never-expires", help="A token without expiry.")
    ] = False,
    as_json: bool = JsonOpt,
) -> None:
    """Create a token: it is printed this once and cannot be shown again."""
    body = {
        "name": name,
        "workspace": workspace,
        "scopes": scope,
        "expires_in_days": None if never_expires else days,
    }
    made = reporter_call("POST", "/auth/tokens", body)
    if as_json:
        emit_json(made)
        return
    console.print(f"token {made['token_id']} ({made['name']}, workspace {made['workspace']})")
    console.print(f"scopes: {', '.join(made['scopes'])}; expires: {made['expires_at'] or 'never'}")
    console.print("Keep it now; it is not shown again:")
    print(made["token"])


@app.command("list")
def listing(as_json: bool = JsonOpt) -> None:
    """The tokens (never the tokens themselves) the admin token may see."""
    tokens: list[dict[str, Any]] = reporter_call("GET", "/auth/tokens")["tokens"]
    if as_json:
        emit_json(tokens)
        return
    table = Table("id", "name", "workspace", "scopes", "expires", "last used", "revoked")
    for t in tokens:
        table.add_row(
            t["token_id"],
            t["name"],
            t["workspace"],
            ", ".join(t["scopes"]),
            t["expires_at"] or "never",
            t["last_used_at"] or "-",
            t["revoked_at"] or "-",
        )
    console.print(table)


@app.command()
def revoke(
    token_id: Annotated[str, typer.Argument(help="The token's id (tally token list).")],
    as_json: bool = JsonOpt,
) -> None:
    """Revoke a token: the reporter answers it 401 from now on."""
    gone = reporter_call("DELETE", f"/auth/tokens/{token_id}")
    if as_json:
        emit_json(gone)
        return
    console.print(f"revoked {gone['token_id']} ({gone['name']}) at {gone['revoked_at']}")
