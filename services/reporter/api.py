"""The reporter's HTTP API (JSON)."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.reporter.kpi import compute_kpi
from services.reporter.plans import plan_route
from services.reporter.repo import TOKEN_GROUPS, ReportRepo

_SPAN = re.compile(r"^(\d+)([hdw])$")


def parse_since(text: str, now: datetime) -> datetime:
    """``7d``, ``12h``, ``2w`` or an ISO date/time, as the start of a report's window.

    Raises:
        ValueError: the text is neither (the message names it).
    """
    if m := _SPAN.match(text):
        unit = {"h": "hours", "d": "days", "w": "weeks"}[m.group(2)]
        return now - timedelta(**{unit: int(m.group(1))})
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"since: expected 7d, 12h, 2w or an ISO date, got {text!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_api(repo: ReportRepo) -> Starlette:
    async def run_kpi(request: Request) -> Response:
        """``GET /runs/{run_id}/kpi``: the KPI summary lines and ``kpi.json``."""
        run_id = request.path_params["run_id"]
        run = await repo.run(run_id)
        timeline = await repo.timeline(run_id)
        if run is None and not timeline:
            return _error(f"run {run_id} not found", 404)
        started = (run or {}).get("started_at")
        finished = (run or {}).get("finished_at")
        kpi = compute_kpi(timeline, started_at=started, finished_at=finished, run_id=run_id)
        return JSONResponse(
            {
                "run_id": run_id,
                "finished": finished is not None,
                "outcome": (run or {}).get("outcome"),
                "summary": kpi.summary_lines(),
                "kpi": json.loads(kpi.to_json()),
            }
        )

    async def run_show(request: Request) -> Response:
        """``GET /runs/{run_id}``: the run and its timeline, oldest event first."""
        run_id = request.path_params["run_id"]
        run = await repo.run(run_id)
        timeline = await repo.timeline(run_id)
        if run is None and not timeline:
            return _error(f"run {run_id} not found", 404)
        body = {"run": run, "timeline": timeline}
        return Response(json.dumps(body, default=str), media_type="application/json")

    async def tokens(request: Request) -> Response:
        """``GET /tokens?since=7d&by=model&workspace=W``: token use grouped."""
        by = request.query_params.get("by", "model")
        if by not in TOKEN_GROUPS:
            return _error(f"by: expected one of {', '.join(TOKEN_GROUPS)}, got {by!r}")
        try:
            since = parse_since(request.query_params.get("since", "7d"), datetime.now(UTC))
        except ValueError as exc:
            return _error(str(exc))
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
        ]
    )
