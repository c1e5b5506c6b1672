"""``tally serve``, ``tally up``, ``tally db``, ``tally streams``: running Tally."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

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


@db.command("partitions")
def db_partitions(
    ahead: int = typer.Option(3, min=0, help="Months of partitions kept ready past this one."),
    retention_months: int = typer.Option(
        0,
        min=0,
        envvar="TALLY_PARTITION_RETENTION_MONTHS",
        help="Drop partitions older than this many whole months before this one (0: keep all).",
    ),
    export_dir: Path | None = typer.Option(
        None,
        envvar="TALLY_PARTITION_EXPORT_DIR",
        help="Write each partition to <table>_pYYYYMM.csv here before dropping it.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Keep run_events and token_usage's monthly partitions: create ahead, adopt rows of
    months without one, drop (after exporting, if asked) what retention lets go."""
    from tally.db.partitions import maintain

    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
    done = run(
        maintain(
            settings().database_url,
            ahead=ahead,
            retention_months=retention_months,
            export_dir=export_dir,
        )
    )
    if as_json:
        emit_json(dataclasses.asdict(done))
        return
    for table, created in done.created.items():
        console.print(
            f"{table}: created {', '.join(created) or 'none'}; "
            f"moved {done.moved_rows[table]} rows from the default partition; "
            f"dropped {', '.join(done.dropped[table]) or 'none'}"
        )
    for path in done.exported:
        console.print(f"exported {path}")


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
