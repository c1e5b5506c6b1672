"""``GET /compare?a=RUN_A&b=RUN_B``: two runs' KPI summaries side by side, and how they differ.

Each side is exactly what ``GET /runs/{run_id}/kpi`` answers for that run (both routes
build it with ``run_report``). ``rows`` are the display rows of ``kpi.compare`` (metric,
a, b, b - a, formatted); ``deltas`` holds every numeric KPI of either run under a dotted
name (``total_seconds``, ``tokens.input``, ``phases.implement.seconds``) with its two
values, ``b - a`` and ``b / a`` (None where a value is missing or ``a`` is 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from services.reporter.auth import RunsRead
from services.reporter.errors import not_found
from services.reporter.kpi import RunKpi, compare, compute_kpi
from services.reporter.params import Id, Params
from services.reporter.repo import ReportRepo


class RunReportBody(BaseModel):
    """A run's KPI report: whether it finished, its outcome, 10 summary lines, kpi.json."""

    run_id: str
    finished: bool
    outcome: str | None
    summary: list[str]
    kpi: RunKpi


class CompareRow(BaseModel):
    """One display row: the metric, each run's value and ``b - a``, formatted."""

    metric: str
    a: str
    b: str
    delta: str


class Delta(BaseModel):
    """A numeric KPI of either run; ``delta`` is ``b - a``, ``ratio`` ``b / a``."""

    a: float | None
    b: float | None
    delta: float | None
    ratio: float | None


class Comparison(BaseModel):
    a: RunReportBody
    b: RunReportBody
    rows: list[CompareRow]
    deltas: dict[str, Delta]


class CompareParams(Params):
    a: Id
    b: Id


@dataclass(frozen=True)
class RunReport:
    """One run's KPIs and the row the tracker keeps for it (None while only events exist)."""

    run_id: str
    run: dict[str, Any] | None
    kpi: RunKpi

    def body(self) -> RunReportBody:
        """The answer: outcome, the 10 summary lines and ``kpi.json``."""
        return RunReportBody(
            run_id=self.run_id,
            finished=(self.run or {}).get("finished_at") is not None,
            outcome=(self.run or {}).get("outcome"),
            summary=self.kpi.summary_lines(),
            kpi=self.kpi,
        )


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


def comparison(a: RunReport, b: RunReport) -> Comparison:
    """The ``/compare`` answer: both reports, display rows, and numeric deltas ``b - a``."""
    return Comparison(
        a=a.body(),
        b=b.body(),
        rows=[
            CompareRow(metric=metric, a=x, b=y, delta=delta)
            for metric, x, y, delta in compare(a.kpi, b.kpi)
        ],
        deltas={
            name: Delta(**d)
            for name, d in kpi_deltas(
                a.kpi.model_dump(mode="json"), b.kpi.model_dump(mode="json")
            ).items()
        },
    )


def compare_router(repo: ReportRepo) -> APIRouter:
    """``GET /compare?a=RUN_A&b=RUN_B``: differences read as b - a."""
    router = APIRouter(tags=["runs"])

    @router.get("/compare", response_model=Comparison)
    async def show(
        q: Annotated[CompareParams, Query()],
        who: RunsRead,
    ) -> Comparison:
        """Two runs' KPI reports side by side, display rows and every numeric difference."""
        if not who.operator:
            for field, run_id in (("a", q.a), ("b", q.b)):
                who.hide_unless_owned(await repo.run_workspace(run_id), field, f"run {run_id}")
        a = await run_report(repo, q.a)
        b = await run_report(repo, q.b)
        if a is None or b is None:
            unknown = [run_id for run_id, found in ((q.a, a), (q.b, b)) if not found]
            field = "a" if a is None else "b"
            raise not_found(field, "; ".join(f"run {r} not found" for r in unknown))
        return comparison(a, b)

    return router
