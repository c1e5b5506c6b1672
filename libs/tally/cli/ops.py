"""``tally serve``, ``tally up``, ``tally db``, ``tally streams``: running Tally."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any

import typer
import uvicorn

from tally.cli.common import JsonOpt, console, emit_json, fail, run, settings
from tally.logging import configure_logging

#: The six services, in the order ``tally up`` starts them.
SERVICES = ("tracker", "quota", "learner", "estimator", "assigner", "reporter")

ops = typer.Typer()


def _load(service: str) -> tuple[Any, Any]:
    """A service's ``create_app`` and settings class (the only place a service is imported)."""
    if service not in SERVICES:
        fail(f"unknown service {service!r}; one of: {', '.join(SERVICES)}", code=2)
    app_mod = importlib.import_module(f"services.{service}.app")
    settings_mod = importlib.import_module(f"services.{service}.settings")
    cls = next(
        v
        for k, v in vars(settings_mod).items()
        if k.endswith("Settings")
        and k != "ServiceSettings"
        and getattr(v, "__module__", "") == settings_mod.__name__
    )
    return app_mod.create_app, cls


class _Server(uvicorn.Server):
    """A uvicorn server that tells the app it is stopping before it drains connections.

    uvicorn waits for open connections to end before running the app's shutdown, so a
    response that never ends by itself (the reporter's live stream) would hold the process
    up; the app's exit hooks (:meth:`tally.service.ServiceKit.on_exit_signal`) end them.
    """

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._exit_tasks: set[asyncio.Task[None]] = set()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        hooks = getattr(self.config.app, "exit_hooks", ())
        if first and hooks:
            # A signal handler: hand the hooks to the event loop running in this thread.
            loop = asyncio.get_running_loop()
            loop.call_soon_threadsafe(self._run_exit_hooks, hooks)

    def _run_exit_hooks(self, hooks: Sequence[Callable[[], Coroutine[Any, Any, None]]]) -> None:
        for hook in hooks:
            task = asyncio.get_running_loop().create_task(hook())
            self._exit_tasks.add(task)
            task.add_done_callback(self._exit_tasks.discard)


def _server(service: str, port: int | None = None) -> uvicorn.Server:
    create_app, settings_cls = _load(service)
    s = settings_cls()
    config = uvicorn.Config(
        create_app(s),
        host=s.http_host,
        port=port or s.http_port,
        log_level="warning",
        lifespan="on",
    )
    return _Server(config)


@ops.command("serve")
def serve(
    service: str = typer.Argument(..., help=f"One of: {', '.join(SERVICES)}."),
    port: int | None = typer.Option(None, help="HTTP port for /healthz and /metrics."),
    as_json: bool = typer.Option(False, "--json", help="Log JSON lines even on a terminal."),
) -> None:
    """Run one service in this process (scale by running more of them)."""
    configure_logging(settings().log_level, json=as_json or None)
    asyncio.run(_server(service, port).serve())


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
        servers = [_server(name) for name in chosen]
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
    import nats

    from tally.bus import provision_streams
    from tally.subjects import Catalog

    s = settings()

    async def main() -> list[str]:
        nc = await nats.connect(s.nats_url, connect_timeout=3)
        try:
            return await provision_streams(nc, Catalog(s.namespace))
        finally:
            await nc.close()

    names = run(main())
    if as_json:
        emit_json({"streams": names})
    else:
        console.print("streams: " + ", ".join(names))
