"""Quota alerts as history: each ``quota.alert`` the quota service fired, recorded once
(its event id is the key, so a redelivery changes nothing) and served at
``GET /quota/alerts``, newest first.

An alert keeps the threshold the quota service applied (a subscription's own
``alert_thresholds``, or 75/90/100) and the use that crossed it: tokens, or integer
micro-dollars for the ``usd`` metric. Its workspace is the one whose reservation crossed
the threshold; a workspace token sees only its own workspace's alerts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.auth import ReportsRead
from services.reporter.params import Id, Params, Since, Workspace, window_start
from tally.db.tables import quota_alerts
from tally.events import QuotaAlert
from tally.money import usd_to_micros


def alert_row(e: QuotaAlert) -> dict[str, object]:
    """The ``quota_alerts`` row of an alert (dollars become micro-dollars)."""
    exact = usd_to_micros if e.metric == "usd" else round
    return {
        "event_id": e.event_id,
        "workspace": e.workspace,
        "subscription": e.subscription,
        "period": e.window,
        "window_id": e.window_id,
        "metric": e.metric,
        "threshold_pct": e.threshold_pct,
        "used": exact(e.used),
        "quota_limit": exact(e.limit),
        "fired_at": e.occurred_at,
    }


async def record_alert(engine: AsyncEngine, e: QuotaAlert) -> None:
    """Keep one alert; an alert already kept (a redelivery) changes nothing."""
    stmt = insert(quota_alerts).values(alert_row(e)).on_conflict_do_nothing()
    async with engine.begin() as conn:
        await conn.execute(stmt)


class AlertRow(BaseModel):
    event_id: str
    fired_at: datetime
    workspace: str
    subscription: str
    period: Literal["day", "month"]
    #: ``d:2026-11-30`` or ``m:2026-11``
    window_id: str
    metric: Literal["tokens", "usd"]
    threshold_pct: int
    used: int = Field(description="Use that crossed the threshold: tokens, or micro-dollars.")
    limit: int = Field(description="The window's limit: tokens, or micro-dollars.")


class AlertList(BaseModel):
    alerts: list[AlertRow]
    more: bool = Field(description="More alerts matched than ``limit``.")


class AlertParams(Params):
    workspace: Workspace | None = None
    subscription: Id | None = None
    since: Since | None = None
    limit: int = Field(100, ge=1, le=500)


async def alert_list(engine: AsyncEngine, q: AlertParams, workspace: str | None) -> AlertList:
    a = quota_alerts.c
    stmt = select(quota_alerts)
    if workspace:
        stmt = stmt.where(a.workspace == workspace)
    if q.subscription:
        stmt = stmt.where(a.subscription == q.subscription)
    if q.since:
        stmt = stmt.where(a.fired_at >= window_start("since", q.since, datetime.now(UTC)))
    stmt = stmt.order_by(a.fired_at.desc(), a.threshold_pct.desc(), a.event_id)
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt.limit(q.limit + 1))).all()
    return AlertList(
        alerts=[
            AlertRow(
                **{k: getattr(r, k) for k in AlertRow.model_fields if k != "limit"},
                limit=r.quota_limit,
            )
            for r in rows[: q.limit]
        ],
        more=len(rows) > q.limit,
    )


def alerts_router(engine: AsyncEngine) -> APIRouter:
    router = APIRouter()

    @router.get("/quota/alerts", response_model=AlertList, tags=["quota"])
    async def alerts(q: Annotated[AlertParams, Query()], who: ReportsRead) -> AlertList:
        """Quota alerts as they fired, newest first: when, which subscription and window,
        the threshold applied and the use that crossed it."""
        return await alert_list(engine, q, who.workspace_for(q.workspace))

    return router
