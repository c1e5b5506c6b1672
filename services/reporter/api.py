"""The reporter's HTTP API (JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from services.reporter.compare import compare_route, run_report
from services.reporter.export import export_route
from services.reporter.flow import lanes_route
from services.reporter.live import LiveHub, live_routes
from services.reporter.orphans import run_state
from services.reporter.params import error, parse_since
from services.reporter.plans import plan_route
from services.reporter.repo import TOKEN_GROUPS, ReportRepo


def create_api(
    repo: ReportRepo,
    live: LiveHub,
    *routes: BaseRoute,
    orphan_after: timedelta = timedelta(minutes=10),
) -> Starlette:
    """The API's routes, plus ``routes`` (those that publish, such as OTLP ingestion)."""

    async def run_kpi(request: Request) -> Response:
        """``GET /runs/{run_id}/kpi``: the KPI summary lines and ``kpi.json``."""
        run_id = request.path_params["run_id"]
        report = await run_report(repo, run_id)
        if report is None:
            return error(f"run {run_id} not found", 404)
        return JSONResponse(report.body())

    async def run_show(request: Request) -> Response:
        """``GET /runs/{run_id}``: the run and its timeline, oldest event first."""
        run_id = request.path_params["run_id"]
        run = await repo.run(run_id)
        timeline = await repo.timeline(run_id)
        if run is None and not timeline:
            return error(f"run {run_id} not found", 404)
        first_at = timeline[0]["at"] if timeline else None
        state = run_state(run, first_at, datetime.now(UTC), orphan_after)
        body = {"run": run, "state": state, "timeline": timeline}
        return Response(json.dumps(body, default=str), media_type="application/json")

    async def tokens(request: Request) -> Response:
        """``GET /tokens?since=7d&by=model&workspace=W``: token use grouped."""
        by = request.query_params.get("by", "model")
        if by not in TOKEN_GROUPS:
            return error(f"by: expected one of {', '.join(TOKEN_GROUPS)}, got {by!r}")
        try:
            since = parse_since(request.query_params.get("since", "7d"), datetime.now(UTC))
        except ValueError as exc:
            return error(str(exc))
        rows = await repo.token_report(
            since=since, by=by, workspace=request.query_params.get("workspace")
        )
        return JSONResponse({"since": since.isoformat(), "by": by, "rows": rows})

    return Starlette(
        routes=[
            Route("/runs/{run_id}/kpi", run_kpi),
            Route("/runs/{run_id}", run_show),
            Route("/tokens", tokens),
            plan_route(repo.engine),
            compare_route(repo),
            export_route(repo.engine),
            lanes_route(repo.engine),
            *live_routes(live),
            *routes,
        ]
    )
