"""Estimator subscribers: estimate new tasks and answer estimate-only requests."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from nats.errors import NoRespondersError

from services.estimator.estimator import VelocitySamples, estimate
from services.estimator.repo import EstimatorRepo
from services.estimator.scoring import ScoringConfig
from services.estimator.tokens import TokenCalibration
from services.estimator.workspace import WorkspacePoints, workspace_points
from tally import metrics
from tally.bus import Bus
from tally.errors import TallyError
from tally.events import (
    CalibrationUpdated,
    Estimate,
    EstimateRequest,
    TaskCreated,
    TaskEstimated,
    TaskSpec,
)
from tally.events.assign import RecommendReply, RecommendRequest
from tally.events.plans import HistoryImportReply, HistoryImportRequest


@dataclass
class _Workspace:
    loaded_at: float
    index: WorkspacePoints
    velocity: VelocitySamples


@dataclass
class Estimator:
    """Estimates tasks with each workspace's history, cached for ``history_ttl_s``."""

    repo: EstimatorRepo
    config: ScoringConfig
    history_ttl_s: float
    tokens: TokenCalibration = field(default_factory=TokenCalibration)
    #: The learner's latest calibration per workspace: velocity pools and token factors.
    calibrations: dict[str, CalibrationUpdated] = field(default_factory=dict)
    _cache: dict[str, _Workspace] = field(default_factory=dict)

    async def _workspace(self, workspace: str) -> _Workspace:
        cached = self._cache.get(workspace)
        if cached is None or time.monotonic() - cached.loaded_at > self.history_ttl_s:
            velocity = dict(await self.repo.velocity_samples(workspace))
            # The learner's fits win over the estimator's own samples where it has them.
            if workspace in self.calibrations:
                velocity.update(self.calibrations[workspace].velocity_pools())
            history = await self.repo.history(workspace)
            # Checking the points weights on held-out history is CPU work: off the event
            # loop, so other requests are answered meanwhile.
            points = await asyncio.to_thread(workspace_points, history, self.config.points)
            cached = _Workspace(time.monotonic(), points, velocity)
            self._cache[workspace] = cached
        return cached

    def forget(self, workspace: str) -> None:
        """Drop a workspace's cached history, so the next estimate reads it again."""
        self._cache.pop(workspace, None)

    async def estimate(self, spec: TaskSpec, workspace: str, task_id: str | None) -> Estimate:
        ws = await self._workspace(workspace)
        cal = self.calibrations.get(workspace)
        tokens = TokenCalibration(factors=dict(cal.token_factors)) if cal else self.tokens
        return estimate(
            spec, ws.index, self.config, velocity=ws.velocity, tokens=tokens, task_id=task_id
        )


def register(bus: Bus, estimator: Estimator) -> None:
    """Subscribe the estimator's handlers on ``bus``."""

    @bus.on(TaskCreated)
    async def on_created(e: TaskCreated) -> None:
        est = await estimator.estimate(e, e.workspace, e.task_id)
        estimated = e.child(
            TaskEstimated, event_id=f"estimated-{e.task_id}", task_id=e.task_id, estimate=est
        )
        await estimator.repo.save(estimated)
        await bus.publish(estimated)
        metrics.ESTIMATES.labels("task").inc()

    @bus.responder(EstimateRequest)
    async def on_request(r: EstimateRequest) -> Estimate:
        metrics.ESTIMATES.labels("estimate_only").inc()
        est = await estimator.estimate(r, r.workspace, None)
        # The assigner's pick, when it answers quickly; an estimate never waits on it.
        try:
            pick = await bus.request(
                r.child(RecommendRequest, estimate=est),
                RecommendReply,
                step="assigner",
                timeout=1.0,
            )
        except (TallyError, NoRespondersError):  # no assigner running, or a slow one
            return est
        return est.model_copy(update={"recommended_model": pick.model})

    @bus.on_broadcast(CalibrationUpdated)
    async def on_calibration(e: CalibrationUpdated) -> None:
        estimator.calibrations[e.workspace] = e
        estimator.forget(e.workspace)

    @bus.responder(HistoryImportRequest)
    async def on_history_import(r: HistoryImportRequest) -> HistoryImportReply:
        size = await estimator.repo.import_history(r.workspace, r.records)
        estimator.forget(r.workspace)
        return HistoryImportReply(workspace=r.workspace, imported=len(r.records), history_size=size)
