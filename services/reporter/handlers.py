"""Reporter subscribers: recorded runs become live metric messages; quota alerts are kept."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from services.reporter.alerts import record_alert
from tally.bus import Bus
from tally.events import QuotaAlert, RunRecorded


def register(bus: Bus, engine: AsyncEngine) -> None:
    """Subscribe the reporter's handlers on ``bus``."""

    @bus.on(QuotaAlert)
    async def on_alert(e: QuotaAlert) -> None:
        await record_alert(engine, e)
        # Pages showing alerts read them again (GET /quota/alerts): history stays the API's.
        await bus.publish_live(
            "alerts",
            {
                "event_id": e.event_id,
                "workspace": e.workspace,
                "subscription": e.subscription,
                "window_id": e.window_id,
                "threshold_pct": e.threshold_pct,
            },
        )

    @bus.on(RunRecorded)
    async def on_recorded(e: RunRecorded) -> None:
        await bus.publish_live(
            "runs",
            {
                "run_id": e.run_id,
                "task_id": e.task_id,
                "workspace": e.workspace,
                "model": e.model,
                "outcome": e.outcome,
                "finished_at": e.finished_at.isoformat(),
                "success": e.success,
                "actual_hours": e.actual_hours,
                "cost_usd": e.cost_usd,
                "tokens": e.tokens.total,
                "velocity": e.velocity,
                #: a run totalled again after late events is sent again, with more events
                "event_count": e.event_count,
            },
        )
