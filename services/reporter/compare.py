"""``GET /compare?a=RUN_A&b=RUN_B``: two runs' KPI summaries side by side, and how they differ.

Each side is exactly what ``GET /runs/{run_id}/kpi`` answers for that run (both routes
build it with ``run_report``). ``rows`` are the display rows of ``kpi.compare`` (metric,
a, b, b - a, formatted); ``deltas`` holds every numeric KPI of either run under a dotted
name (``total_seconds``, ``tokens.input``, ``phases.implement.seconds``) with its two
values, ``b - a`` and ``b / a`` (None where a value is missing or ``a`` is 0).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.reporter.kpi import RunKpi, compare, compute_kpi
from services.reporter.params import error
from services.reporter.repo import ReportRepo


@dataclass(frozen=True)
class RunReport:
    """One run's KPIs and the row the tracker keeps for it (None while only events exist)."""

    run_id: str
    run: dict[str, Any] | None
    kpi: RunKpi

    def body(self) -> dict[str, Any]:
        """The JSON answer: outcome, the 10 summary lines and ``kpi.json``."""
        return {
            "run_id": self.run_id,
            "finished": (self.run or {}).get("finished_at") is not None,
            "outcome": (self.run or {}).get("outcome"),
            "summary": self.kpi.summary_lines(),
            "kpi": json.loads(self.kpi.to_json()),
        }


async def run_report(repo: ReportRepo, run_id: str) -> RunReport | None:
    """The run's KPI report from its row and timeline; None when Tally knows neither."""
    run = await repo.run(run_id)
    timeline = await repo.timeline(run_id)
    if run is None and not timeline:
        return None
    started = (run or {}).get("started_at")
    finished = (run or {}).get("finished_at")
    kpi = compute_kpi(timeline, started_at=started, finished_at=finished, run_id=run_id)
    return RunReport(run_id=run_id, run=run, kpi=kpi)


def numeric_kpis(kpi: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers in a ``kpi.json`` document, flattened to dotted names.

    Lists of named items (``phases``) are keyed by their ``name``; booleans, text, times
    and missing values (``null``) are left out.

    >>> numeric_kpis({"worker_calls": 3, "tokens": {"input": 10}, "run_id": "r"})
    {'worker_calls': 3, 'tokens.input': 10}
    """
    flat: dict[str, float] = {}
    for key, value in kpi.items():
        name = f"{prefix}{key}"
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            flat[name] = value
        elif isinstance(value, Mapping):
            flat.update(numeric_kpis(value, f"{name}."))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, Mapping) and "name" in item:
                    rest = {k: v for k, v in item.items() if k != "name"}
                    flat.update(numeric_kpis(rest, f"{name}.{item['name']}."))
    return flat


def kpi_deltas(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, dict[str, float | None]]:
    """Every numeric KPI of either run: ``{"a", "b", "delta": b - a, "ratio": b / a}``.

    ``delta`` is None when either run lacks the number; ``ratio`` also when ``a`` is 0.
    """
    flat_a, flat_b = numeric_kpis(a), numeric_kpis(b)
    deltas: dict[str, dict[str, float | None]] = {}
    for name in dict.fromkeys([*flat_a, *flat_b]):
        x, y = flat_a.get(name), flat_b.get(name)
        delta = ratio = None
        if x is not None and y is not None:
            # Rounded so that 0.3 - 0.1 reads 0.2, not 0.19999999999999998.
            delta = round(y - x, 9)
            ratio = round(y / x, 6) if x else None
        deltas[name] = {"a": x, "b": y, "delta": delta, "ratio": ratio}
    return deltas


def comparison(a: RunReport, b: RunReport) -> dict[str, Any]:
    """The ``/compare`` answer: both reports, display rows, and numeric deltas ``b - a``."""
    body_a, body_b = a.body(), b.body()
    return {
        "a": body_a,
        "b": body_b,
        "rows": [
            {"metric": metric, "a": x, "b": y, "delta": delta}
            for metric, x, y, delta in compare(a.kpi, b.kpi)
        ],
        "deltas": kpi_deltas(body_a["kpi"], body_b["kpi"]),
    }


def compare_route(repo: ReportRepo) -> Route:
    """The ``/compare`` route: ``?a=RUN_A&b=RUN_B``, differences read as b - a."""

    async def show(request: Request) -> Response:
        ids = {side: request.query_params.get(side, "").strip() for side in ("a", "b")}
        missing = [side for side, run_id in ids.items() if not run_id]
        if missing:
            return error(f"missing {' and '.join(missing)}: compare with ?a=RUN_A&b=RUN_B")
        a = await run_report(repo, ids["a"])
        b = await run_report(repo, ids["b"])
        if a is None or b is None:
            unknown = [run_id for run_id, found in ((ids["a"], a), (ids["b"], b)) if not found]
            return error("; ".join(f"run {run_id} not found" for run_id in unknown), 404)
        return JSONResponse(comparison(a, b))

    return Route("/compare", show)
