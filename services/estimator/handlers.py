"""Estimator subscribers: estimate new tasks and answer estimate-only requests."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import structlog
from nats.errors import NoRespondersError

from services.estimator.cache import WorkspaceCache
from services.estimator.estimator import estimate
from services.estimator.repo import EstimatorRepo
from services.estimator.scoring import ScoringConfig
from services.estimator.tokens import TokenCalibration
from services.estimator.workspace import WorkspaceModel, build_workspace
from tally import metrics
from tally.bus import Bus
from tally.errors import PermanentError, TallyError
from tally.events import (
    CalibrationUpdated,
    Estimate,
    EstimateRequest,
    TaskCreated,
    TaskEstimated,
    TaskSpec,
    new_id,
)
from tally.events.assign import RecommendReply, RecommendRequest
from tally.events.plans import (
    HISTORY_CHANGED,
    HistoryChanged,
    HistoryImportReply,
    HistoryImportRequest,
)

log = structlog.get_logger(__name__)


@dataclass
class Estimator:
    """Estimates tasks with each workspace's models, built once per change of its history."""

    repo: EstimatorRepo
    config: ScoringConfig
    check_interval_s: float = 1.0
    tokens: TokenCalibration = field(default_factory=TokenCalibration)
    #: The learner's latest calibration per workspace (its token factors).
    calibrations: dict[str, CalibrationUpdated] = field(default_factory=dict)
    workspaces: WorkspaceCache = field(init=False)
    #: This process among the estimator's replicas (history notices name their sender).
    replica: str = field(default_factory=lambda: new_id()[:12])

    def __post_init__(self) -> None:
        self.workspaces = WorkspaceCache(self._fingerprint, self._build, self.check_interval_s)

    async def _fingerprint(self, workspace: str) -> tuple[Hashable, Hashable]:
        return await self.repo.fingerprint(workspace)

    async def _build(self, workspace: str) -> WorkspaceModel:
        history = await self.repo.history(workspace)
        durations = await self.repo.durations(workspace)
        # Fitting is CPU work: off the event loop, so other requests are answered meanwhile.
        return await asyncio.to_thread(build_workspace, history, durations, self.config)

    def forget(self, workspace: str, *, wait: bool = True) -> None:
        """Mark a workspace's history changed (see :class:`WorkspaceCache.invalidate`)."""
        self.workspaces.invalidate(workspace, wait=wait)

    async def estimate(self, spec: TaskSpec, workspace: str, task_id: str | None) -> Estimate:
        ws = await self.workspaces.get(workspace)
        cal = self.calibrations.get(workspace)
        tokens = TokenCalibration(factors=dict(cal.token_factors)) if cal else self.tokens
        # The estimate itself is fast (a transform and a prediction): on the loop.
        return estimate(spec, ws, self.config, tokens=tokens, task_id=task_id)


#: Tasks estimated at most per batch: enough to share the round trips, few enough that
#: the first of a batch is not held long behind the estimates of the rest.
BATCH = 64


async def announce_history_change(bus: Bus, r: HistoryImportRequest, replica: str) -> None:
    """Tell every estimator replica that ``r``'s workspace has a new history."""
    notice = r.child(HistoryChanged, replica=replica)
    await bus.broker.publish(notice.to_json(), bus.catalog.subject(HISTORY_CHANGED))


def register(bus: Bus, estimator: Estimator) -> None:
    """Subscribe the estimator's handlers on ``bus``."""

    @bus.on_batch(TaskCreated, batch_size=BATCH, concurrency=2)
    async def on_created(events: list[TaskCreated]) -> None:
        # The tasks waiting when the last batch was done: estimated, stored in one
        # statement while they are published together (the assigner waits for the
        # events, not for the rows), acknowledged once both are done. If either fails the
        # batch is delivered again: the first stored row and the first published event
        # of a task stand (its event id dedupes the publish).
        estimated = [
            e.child(
                TaskEstimated,
                event_id=f"estimated-{e.task_id}",
                task_id=e.task_id,
                estimate=await estimator.estimate(e, e.workspace, e.task_id),
            )
            for e in events
        ]
        done = await asyncio.gather(
            estimator.repo.save_many(estimated),
            bus.publish_many(estimated),
            return_exceptions=True,  # both finish before the batch fails
        )
        for outcome in done:
            if isinstance(outcome, BaseException):
                raise outcome
        metrics.ESTIMATES.labels("task").inc(len(estimated))

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
        # A calibration follows newly measured runs: rebuilt in the background, while the
        # warm model keeps answering.
        estimator.calibrations[e.workspace] = e
        estimator.forget(e.workspace, wait=False)

    @bus.responder(HistoryImportRequest)
    async def on_history_import(r: HistoryImportRequest) -> HistoryImportReply:
        size = await estimator.repo.import_history(r.workspace, r.records)
        estimator.forget(r.workspace)
        await announce_history_change(bus, r, estimator.replica)
        return HistoryImportReply(workspace=r.workspace, imported=len(r.records), history_size=size)

    @bus.broker.subscriber(bus.catalog.subject(HISTORY_CHANGED))
    async def on_history_changed(body: Any) -> None:
        # Every replica (no queue group): an import one replica stored is reflected by
        # the next answer of any other, without waiting for a fingerprint check.
        raw = bus.broker.context.get_local("message").raw_message
        try:
            notice = HistoryChanged.parse(raw.data)
        except PermanentError as exc:
            log.warning("history_notice_invalid", error=str(exc))
            return
        if notice.replica != estimator.replica:
            estimator.forget(notice.workspace)
