"""``tally serve``, ``tally up``, ``tally db``, ``tally streams``: running Tally."""

from __future__ import annotations

import asyncio

import typer

from tally.cli.common import JsonOpt, console, emit_json, run, settings
from tally.logging import configure_logging

#: The six services, in the order ``tally up`` starts them.
SERVICES = ("tracker", "quota", "learner", "estimator", "assigner", "reporter")

ops = typer.Typer()


@ops.command("serve")
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    port: int | None = typer.Option(None, help="HTTP port for /healthz and /metrics."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines even on a terminal."),
) -> None:
    """Run one service in this process (scale by running more of them)."""
    configure_logging(settings().log_level, json=as_json or None)
    from tally.cli.serving import service_server

    asyncio.run(service_server(service, port).serve())


@ops.command("up")
def up(
    only: list[str] = typer.Option([], "--only", help="Run just these services (repeatable)."),
    migrate: bool = typer.Option(True, help="Apply database migrations first."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines even on a terminal."),
) -> None:
    """Run all six services in one process, for development."""
    configure_logging(settings().log_level, json=as_json or None)
    chosen = only or list(SERVICES)

    async def main() -> None:
        if migrate:
            from tally.db.migrate import migrate as do_migrate

            await do_migrate(settings().database_url)
        from tally.cli.serving import service_server

        servers = [service_server(name) for name in chosen]
        for name, srv in zip(chosen, servers, strict=True):
            console.print(f"starting {name} on :{srv.config.port}")
        await asyncio.gather(*(srv.serve() for srv in servers))

    asyncio.run(main())


db = typer.Typer(help="The Postgres schema.", no_args_is_help=True)


@db.command("upgrade")
def db_upgrade(as_json: bool = JsonOpt) -> None:
    """Create the database if needed and apply every migration."""
    from tally.db.migrate import migrate

    url = settings().database_url
    run(migrate(url))
    if as_json:
        emit_json({"database": url.rsplit("/", 1)[-1], "migrated": True})
    else:
        console.print("database is up to date")


streams = typer.Typer(help="The JetStream streams.", no_args_is_help=True)


@streams.command("provision")
def streams_provision(as_json: bool = JsonOpt) -> None:
    """Create or update every stream (idempotent)."""
    from tally.bus import provision_streams
    from tally.client import TallyClient

    s = settings()

    async def main() -> list[str]:
        async with TallyClient.connect(
            s.nats_url, namespace=s.namespace, options=s.nats_options()
        ) as client:
            return await provision_streams(client.nc, client.catalog, replicas=s.stream_replicas)

    names = run(main())
    if as_json:
        emit_json({"streams": names})
    else:
        console.print("streams: " + ", ".join(names))
