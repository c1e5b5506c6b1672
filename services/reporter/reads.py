"""``GET /runs/{run_id}``, ``GET /runs/{run_id}/kpi`` and ``GET /tokens``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field, computed_field

from services.reporter.auth import Principal, ReportsRead, RunsRead
from services.reporter.compare import RunReportBody, run_report
from services.reporter.errors import not_found
from services.reporter.orphans import RunState, run_state
from services.reporter.params import Params, Since, Workspace, window_start
from services.reporter.repo import TOKEN_GROUPS, ReportRepo
from tally.moneyview import Micros, UsdText, usd_string, with_money

RunId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
TokenGroup = Literal["model", "command", "agent", "task", "provider"]
assert set(TOKEN_GROUPS) == set(TokenGroup.__args__)  # type: ignore[attr-defined]


class TimelineEvent(BaseModel):
    kind: str
    at: datetime
    data: dict[str, Any]


class RunView(BaseModel):
    """A run's row (None while only its events are known), its state and its timeline."""

    run: dict[str, Any] | None
    state: RunState
    timeline: list[TimelineEvent]


class TokenRow(BaseModel):
    key: str
    calls: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_micros: Micros
    #: calls whose model had no known price (their cost is not in ``cost_micros``)
    unpriced_calls: int = 0
    duration_ms: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cost_usd(self) -> UsdText:
        return usd_string(self.cost_micros)


class TokenReport(BaseModel):
    since: datetime
    by: TokenGroup
    workspace: str | None
    rows: list[TokenRow] = Field(description="The groups of highest cost first, at most ``limit``.")
    groups: int = Field(description="How many groups the window holds (rows or not).")
    more: bool = Field(description="More groups than ``limit``: the cheapest are left out.")


class TokenParams(Params):
    since: Since = "7d"
    by: TokenGroup = "model"
    workspace: Workspace | None = None
    limit: int = Field(
        100,
        ge=1,
        le=1000,
        description="The most groups answered, highest cost first (by task, a window can "
        "hold a group per task it touched: thousands).",
    )


async def visible_run(repo: ReportRepo, who: Principal, run_id: str, field: str) -> None:
    """404 for a run of another workspace than the caller's (as for an unknown run)."""
    if not who.operator:
        who.hide_unless_owned(await repo.run_workspace(run_id), field, f"run {run_id}")


def reads_router(repo: ReportRepo, orphan_after: timedelta) -> APIRouter:
    router = APIRouter(tags=["runs"])

    @router.get("/runs/{run_id}/kpi", response_model=RunReportBody)
    async def run_kpi(run_id: RunId, who: RunsRead) -> RunReportBody:
        """The run's 10-line KPI summary and its ``kpi.json``."""
        await visible_run(repo, who, run_id, "run_id")
        report = await run_report(repo, run_id)
        if report is None:
            raise not_found("run_id", f"run {run_id} not found")
        return report.body()

    @router.get("/runs/{run_id}", response_model=RunView)
    async def run_show(run_id: RunId, who: RunsRead) -> RunView:
        """The run and its timeline, oldest event first."""
        await visible_run(repo, who, run_id, "run_id")
        run = await repo.run(run_id)
        timeline = await repo.timeline(run_id)
        if run is None and not timeline:
            raise not_found("run_id", f"run {run_id} not found")
        first_at = timeline[0]["at"] if timeline else None
        state = run_state(run, first_at, datetime.now(UTC), orphan_after)
        return RunView(
            run=with_money(run),
            state=state,
            timeline=[TimelineEvent(**with_money(e)) for e in timeline],
        )

    @router.get("/tokens", response_model=TokenReport, tags=["tokens"])
    async def tokens(
        q: Annotated[TokenParams, Query()],
        who: ReportsRead,
    ) -> TokenReport:
        """Token use since ``since``, grouped by ``by``: tokens by kind, cost and call time.

        The ``limit`` groups of highest cost, highest first; ``groups`` says how many the
        window holds."""
        since = window_start("since", q.since, datetime.now(UTC))
        workspace = who.workspace_for(q.workspace)
        rows, groups = await repo.token_report(
            since=since, by=q.by, workspace=workspace, limit=q.limit
        )
        return TokenReport(
            since=since,
            by=q.by,
            workspace=workspace,
            rows=[TokenRow(**{k: v for k, v in r.items() if k != "cost_usd"}) for r in rows],
            groups=groups,
            more=groups > len(rows),
        )

    return router
