"""Running a service's app under uvicorn (``tally serve``, ``tally up``).

Imported only by those commands: uvicorn and the services' modules are heavy, and every
other command should start fast.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine, Sequence
from types import FrameType
from typing import Any

import uvicorn

from tally.cli.common import fail
from tally.cli.ops import SERVICES


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


def service_server(service: str, port: int | None = None) -> uvicorn.Server:
    """A uvicorn server for ``service``'s app, on its settings' host and port."""
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
