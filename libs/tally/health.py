"""Supervised background tasks and the health a service reports on ``/healthz``.

A :class:`Supervised` task runs a coroutine for as long as the service runs: if it raises,
the crash is logged with the task's name and counted in ``tally_consumer_restarts_total``,
and the coroutine starts again after a growing back-off. :class:`Health` gathers what a
service depends on — its NATS connections, pull consumers and supervised tasks — into one
report: ``/healthz`` answers 200 with it while everything is up and 503 when anything is
down, so an orchestrator restarts (or stops routing to) a replica that cannot work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from faststream.asgi.handlers import GetHandler, get
from faststream.asgi.response import AsgiResponse
from faststream.asgi.types import Scope

from tally import metrics

log = structlog.get_logger(__name__)

_JSON = {"content-type": "application/json"}


class Supervised:
    """A background coroutine started again with back-off whenever it crashes.

    Args:
        service: the service it belongs to (a metric label).
        name: what it is, as logs, metrics and ``/healthz`` name it.
        run: makes the coroutine; it should loop until cancelled (returning ends it).
        backoff_s: the first and the longest pause before a restart.
    """

    def __init__(
        self,
        service: str,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        backoff_s: tuple[float, float] = (0.2, 10.0),
    ) -> None:
        self.service = service
        self.name = name
        self._run = run
        self._backoff = backoff_s
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        #: the last crash, until the coroutine has been started again
        self.error: str | None = None
        #: the last crash ever, kept after a restart (a task that keeps crashing shows it
        #: between its red spells)
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"supervised:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _supervise(self) -> None:
        backoff, longest = self._backoff
        while True:
            try:
                self.error = None
                await self._run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.restarts += 1
                self.error = self.last_error = repr(exc)
                metrics.CONSUMER_RESTARTS.labels(self.service, self.name).inc()
                log.exception("task_crashed", task=self.name, error=repr(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, longest)

    def health(self) -> dict[str, Any]:
        alive = self._task is not None and not self._task.done()
        return {
            "task": self.name,
            "ok": alive and self.error is None,
            "alive": alive,
            "restarts": self.restarts,
            "error": self.error,
            "last_error": self.last_error,
        }


class _Consumer(Protocol):
    def health(self, stale_after_s: float) -> dict[str, Any]: ...


class _Connection(Protocol):
    @property
    def is_connected(self) -> bool: ...


class Health:
    """What a service's health is made of, and its report.

    Args:
        stale_after_s: a consumer without a server answer or finished handler for this
            long counts as stalled.
    """

    def __init__(self, stale_after_s: float) -> None:
        self.stale_after_s = stale_after_s
        self.connections: dict[str, Callable[[], _Connection | None]] = {}
        self.consumers: list[_Consumer] = []
        self.tasks: list[Supervised] = []
        #: servers the service cannot work without (Postgres, Redis): a probe raises if down
        self.servers: dict[str, Callable[[], Awaitable[object]]] = {}
        #: set once the service has started its consumers (readiness)
        self.started = False

    async def probe_servers(self, timeout_s: float = 2.0) -> dict[str, bool]:
        """Whether each server answers a trivial request within ``timeout_s``."""

        async def answers(probe: Callable[[], Awaitable[object]]) -> bool:
            try:
                await asyncio.wait_for(probe(), timeout_s)
            except Exception:  # any failure to answer is "down": the report says which
                return False
            return True

        names = list(self.servers)
        results = await asyncio.gather(*(answers(self.servers[n]) for n in names))
        return dict(zip(names, results, strict=True))

    def report(self, servers: dict[str, bool] | None = None) -> dict[str, Any]:
        """Every part's state and ``ok``: true only if every part is up."""
        servers = servers or {}
        nats = {}
        for name, get_conn in self.connections.items():
            conn = get_conn()
            nats[name] = bool(conn is not None and conn.is_connected)
        consumers = [c.health(self.stale_after_s) for c in self.consumers]
        tasks = [t.health() for t in self.tasks]
        ok = (
            self.started
            and all(nats.values())
            and all(c["ok"] for c in consumers)
            and all(t["ok"] for t in tasks)
            and all(servers.values())
        )
        return {
            "ok": ok,
            "nats": nats,
            "servers": servers,
            "consumers": consumers,
            "tasks": tasks,
        }

    def liveness(self) -> GetHandler:
        """``/healthz``: 200 and the report while all is well, 503 and the report if not."""

        @get(include_in_schema=False)
        async def healthz(scope: Scope) -> AsgiResponse:
            report = self.report(await self.probe_servers())
            return AsgiResponse(json.dumps(report).encode(), 200 if report["ok"] else 503, _JSON)

        return healthz

    def readiness(self) -> GetHandler:
        """``/readyz``: 200 once started with every NATS connection up, else 503."""

        @get(include_in_schema=False)
        async def readyz(scope: Scope) -> AsgiResponse:
            conns = {name: get_conn() for name, get_conn in self.connections.items()}
            ready = self.started and all(c is not None and c.is_connected for c in conns.values())
            return AsgiResponse(
                b'{"ready": %s}' % (b"true" if ready else b"false"), 200 if ready else 503, _JSON
            )

        return readyz
