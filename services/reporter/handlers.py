"""Reporter subscribers: turn recorded runs into live metric messages."""

from __future__ import annotations

from tally.bus import Bus
from tally.events import RunRecorded


def register(bus: Bus) -> None:
    """Subscribe the reporter's handlers on ``bus``."""

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
