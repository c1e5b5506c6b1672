"""The daily learning pass: calibration and the routing policy recomputed from history.

Retraining and evaluation are CPU-bound: they run in a worker thread, on a trainer of
their own, so the event loop keeps handling runs meanwhile. The retrained policy replaces
the stored one atomically, with the runs recorded during the retrain learned on top.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog

from services.learner import reports
from services.learner.learner import Learner
from services.learner.policy_store import State
from services.learner.training import (
    HeldOutEvaluation,
    LearnedRun,
    PolicyTrainer,
    evaluate,
    retrain,
)

log = structlog.get_logger(__name__)


class DailyPassFailed(Exception):
    """Some workspaces could not be relearned (the others were)."""


class DailyPass:
    """Relearns every workspace once a day at ``daily_at`` (UTC)."""

    def __init__(self, learner: Learner) -> None:
        self.learner = learner
        #: One relearn at a time per workspace.
        self._locks: dict[str, asyncio.Lock] = {}

    async def relearn(self, workspace: str) -> dict[str, Any]:
        """Recompute calibration and policy from the full history; store what changed."""
        async with self._locks.setdefault(workspace, asyncio.Lock()):
            return await self._relearn(workspace)

    async def _relearn(self, workspace: str) -> dict[str, Any]:
        before_cal = await self.learner.repo.latest_calibration(workspace) or {}
        after_cal = await self.learner.calibrate(workspace)
        current = await self.learner.trainer(workspace)
        runs = await self.learner.repo.learned_runs(workspace)
        fresh, before_eval, after_eval = await asyncio.to_thread(self._retrain, runs, current)

        def replace(stored: State | None, recorded: list[LearnedRun]) -> State:
            # Runs recorded since ``runs`` was read are learned on top of the fresh policy.
            seen = {r.run_id for r in runs}
            for run in recorded:
                if run.run_id not in seen:
                    fresh.observe(run)
            fresh.version = int((stored or {}).get("version", current.version)) + 1
            return fresh.to_state()

        await self.learner.repo.replace_state(workspace, replace)
        report = {
            "runs": len(runs),
            "calibration": {
                "velocity_before": before_cal.get("velocity", {}),
                "velocity_after": {k: list(v) for k, v in after_cal.velocity.items()},
                "token_factors_before": before_cal.get("token_factors", {}),
                "token_factors_after": after_cal.token_factors,
                "error_trend": after_cal.error_trend.model_dump()
                if after_cal.error_trend
                else None,
            },
            "policy": {
                "version_before": current.version,
                "version_after": fresh.version,
                "changes": reports.changes(current.probabilities(), fresh.probabilities()),
                "held_out_before": vars(before_eval),
                "held_out_after": vars(after_eval),
            },
        }
        await self.learner.checkpoint(workspace, fresh)
        await self.learner.publish_policy(workspace, fresh)
        await self.learner.repo.save_report(workspace, report)
        log.info("relearned", workspace=workspace, runs=len(runs), version=fresh.version)
        return report

    def _retrain(
        self, runs: list[LearnedRun], current: PolicyTrainer
    ) -> tuple[PolicyTrainer, HeldOutEvaluation, HeldOutEvaluation]:
        """A policy retrained on ``runs``, and both policies' held-out scores (CPU-bound:
        run it in a worker thread, on a ``current`` nobody else changes)."""
        s = self.learner.settings
        fresh = retrain(
            runs,
            current.policy,
            group_size=s.group_size,
            held_out_share=s.held_out_share,
            gamma=s.gamma,
        )
        before = evaluate(current.policy, runs, s.held_out_share)
        return fresh, before, evaluate(fresh.policy, runs, s.held_out_share)

    async def relearn_all(self) -> None:
        """Relearn every workspace; one that fails holds up no other, and the pass then
        fails naming them (a crash of the daily pass: counted, red /healthz)."""
        errors: list[str] = []
        for workspace in await self.learner.repo.workspaces():
            try:
                await self.relearn(workspace)
            except Exception as exc:
                log.exception("daily_learning_failed", workspace=workspace)
                errors.append(f"{workspace}: {exc!r}")
        if errors:
            raise DailyPassFailed(f"{len(errors)} workspace(s) failed: {'; '.join(errors[:5])}")

    async def run(self, now: datetime | None = None) -> None:
        """Run :meth:`relearn_all` every day at ``daily_at`` (UTC), until cancelled."""
        while True:
            wait = seconds_until(self.learner.settings.daily_at, now or datetime.now(UTC))
            now = None
            await asyncio.sleep(wait)
            # A failure propagates to the supervisor (counted, restarted with back-off);
            # the restarted loop waits for tomorrow's time again.
            await self.relearn_all()


def seconds_until(at: time, now: datetime) -> float:
    """Seconds from ``now`` to the next time of day ``at`` (UTC); a full day if it is now."""
    target = now.astimezone(UTC).replace(
        hour=at.hour, minute=at.minute, second=at.second, microsecond=0
    )
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()
