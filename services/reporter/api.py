"""The reporter's HTTP API: FastAPI, OpenAPI 3.1 at ``/openapi.json``, docs at ``/docs``.

The docs page's script and style are served by the reporter itself (``fastapi-offline``
ships Swagger UI), so it works where the browser cannot reach a CDN.

Every endpoint has pydantic models for what it takes and answers, refuses query
parameters it does not know (naming them), and answers every error in one JSON shape
(:mod:`services.reporter.errors`). Reads come from Postgres; commands go onto the bus.

Raw ASGI or Starlette endpoints (an OTLP receiver, say) that need no OpenAPI models go
in ``raw_routes``: they are served by the same app, after the typed routes, and their
errors still get the one error shape; each checks its own token (see
:func:`services.reporter.auth.authorize_raw`). Every typed endpoint needs a bearer token
with its scope (:mod:`services.reporter.auth`), spends the token's rate limit, and sees
only the token's workspace. Middleware (e.g. request-duration metrics) is
added on the returned app with ``api.add_middleware(...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline
from starlette.routing import BaseRoute

from services.reporter import errors
from services.reporter.actions import ClientFactory, actions_router
from services.reporter.alerts import alerts_router
from services.reporter.auth import TokenStore, document_scopes
from services.reporter.compare import compare_router
from services.reporter.console import console_routes
from services.reporter.export import export_router
from services.reporter.flow import lanes_router
from services.reporter.insights import insights_router
from services.reporter.learning import learning_router
from services.reporter.listings import listings_router
from services.reporter.live import LiveHub, live_router
from services.reporter.params import known_parameters_only
from services.reporter.plans import plan_router
from services.reporter.ratelimit import BodyLimit, RateLimiter
from services.reporter.reads import reads_router
from services.reporter.repo import ReportRepo
from services.reporter.routing import routing_router
from services.reporter.series import series_router
from services.reporter.taskview import TaskRepo, task_router
from services.reporter.tokens import tokens_router
from services.reporter.whoami import whoami_router

TITLE = "Tally reporter API"
VERSION = "1.0.0"


def create_api(
    repo: ReportRepo,
    live: LiveHub,
    clients: ClientFactory,
    tokens: TokenStore,
    *,
    limiter: RateLimiter | None = None,
    max_body_bytes: int = 1024 * 1024,
    namespace: str = "",
    orphan_after: timedelta = timedelta(minutes=10),
    max_wait_s: float = 30.0,
    lanes_fresh_s: float = 0.0,
    raw_routes: Sequence[BaseRoute] = (),
) -> FastAPI:
    """The API app.

    Args:
        repo: the reporter's queries.
        live: the hub behind ``/live/events``.
        clients: opens a bus client for commands (on the reporter's NATS connection).
        tokens: the API tokens (and the bootstrap token, if set).
        limiter: each token's rate limit (default: 20 a second, bursts of 100).
        max_body_bytes: the largest request body read (raw routes keep their own).
        namespace: the installation's namespace (the assigner keys its rows by it).
        orphan_after: a run with events this old and no ``run.started`` is an orphan.
        max_wait_s: the longest any request waits for an answer from the bus.
        lanes_fresh_s: how long a ``/lanes`` answer is served again (0: only to the
            requests that asked while it was computed).
        raw_routes: plain Starlette routes served beside the typed ones.
    """
    api = FastAPIOffline(
        title=TITLE,
        version=VERSION,
        summary="Runs, KPIs, tokens, lanes, plans and export; tasks, estimates and quota.",
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/assets",
        responses=errors.ERRORS,
        dependencies=[Depends(known_parameters_only)],
    )
    errors.install(api)
    api.state.tokens = tokens
    api.state.limiter = limiter or RateLimiter(rate=20.0, burst=100)
    tasks = TaskRepo(repo.engine, namespace)
    routers = (
        reads_router(repo, orphan_after),
        compare_router(repo),
        task_router(tasks),
        actions_router(clients, tasks, max_wait_s=max_wait_s),
        lanes_router(repo.engine, lanes_fresh_s),
        plan_router(repo.engine),
        export_router(repo.engine),
        insights_router(repo.engine, namespace),
        live_router(live),
        tokens_router(tokens),
        learning_router(clients, max_wait_s=max_wait_s),
        listings_router(repo.engine, namespace),
        series_router(repo.engine),
        whoami_router(),
        routing_router(clients, max_wait_s=max_wait_s),
        alerts_router(repo.engine),
    )
    for router in routers:
        api.include_router(router)
    api.router.routes.extend(raw_routes)
    api.router.routes.extend(console_routes())
    document_scopes(api, routers)
    own_limit = tuple(getattr(r, "path", "") for r in raw_routes)
    api.add_middleware(BodyLimit, max_bytes=max_body_bytes, own_limit=own_limit)
    return api
