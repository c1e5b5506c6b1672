"""``learner.job.command``: start, read, list, cancel, promote learning jobs.

Starting a job writes its row (``queued``) and puts it on the work queue of its
priority. Cancelling a queued job ends it at once; a running one stops at its next
iteration. Promoting publishes the job's best checkpoint as the workspace's live routing
policy (a new version on ``learner.policy.updated``), noting who promoted it and why.
"""

from __future__ import annotations

from typing import Any

import structlog

from services.learner.jobs.store import JobStore
from services.learner.learner import Learner
from services.learner.policy_store import State
from services.learner.rewards import UnknownRewardError, default_registry
from services.learner.training import LearnedRun
from tally.errors import PermanentError
from tally.events import new_id, utcnow
from tally.events.jobs import QUEUED, LearningJobCommand, LearningJobReply
from tally.money import micros_to_usd

log = structlog.get_logger(__name__)


def view(row: Any, *, detail: bool = False) -> dict[str, Any]:
    """A job as clients show it (``tally learn status --json``, the API)."""
    config = dict(row.config)
    out: dict[str, Any] = {
        "job_id": row.job_id,
        "name": row.name,
        "workspace": row.workspace,
        "status": row.status,
        "priority": row.priority,
        "iteration": row.iteration,
        "iterations": config.get("iterations"),
        "progress": dict(row.progress or {}),
        "spent_usd": float(micros_to_usd(row.spent_micros)),
        "budget_usd": config.get("budget_usd"),
        "budget_alerts": [f"{a * 100:.0f}%" for a in row.alerts or []],
        "cancel_requested": row.cancel_requested,
        "error": row.error,
        "promoted": row.promoted,
        "created_by": row.created_by,
        "created_at": row.created_at.isoformat(),
        "started_at": row.started_at.isoformat() if row.started_at else None,
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
        "attempts": row.epoch,
    }
    if detail:
        out["config"] = config
        out["report"] = row.report
    return out


class JobCommands:
    """Answers ``learner.job.command`` for the learner."""

    def __init__(self, store: JobStore, learner: Learner) -> None:
        self.store = store
        self.learner = learner

    async def handle(self, c: LearningJobCommand) -> LearningJobReply:
        if c.action == "start":
            return LearningJobReply(jobs=[await self.start(c)])
        if c.action == "list":
            rows = await self.store.jobs(c.workspace, c.status, c.limit)
            return LearningJobReply(jobs=[view(r) for r in rows])
        row = await self._job(c)
        if c.action == "cancel":
            row = await self.store.request_cancel(row.job_id)
        elif c.action == "promote":
            await self.promote(row.job_id, c.by or c.source, c.note or "")
            row = await self._job(c)
        checkpoints = [
            {"id": k.id, "iteration": k.iteration, "score": k.score}
            for k in await self.store.checkpoints(row.job_id)
        ]
        return LearningJobReply(jobs=[view(row, detail=True) | {"checkpoints": checkpoints}])

    async def _job(self, c: LearningJobCommand) -> Any:
        if not c.job_id:
            raise PermanentError(f"job_id: {c.action} needs a job id")
        row = await self.store.get(c.job_id)
        if row is None or c.workspace not in ("*", row.workspace):
            raise PermanentError(f"job_id: no learning job {c.job_id!r} in {c.workspace!r}")
        return row

    async def start(self, c: LearningJobCommand) -> dict[str, Any]:
        if c.config is None:
            raise PermanentError("config: start needs a job configuration")
        if c.workspace == "*":
            raise PermanentError("workspace: a job trains on one workspace; name it")
        try:
            default_registry().get(c.config.reward)
        except UnknownRewardError as exc:
            raise PermanentError(f"reward: {exc.args[0]}") from None
        job_id = f"job-{new_id()[:16]}"
        row = await self.store.create(
            {
                "job_id": job_id,
                "workspace": c.workspace,
                "name": c.name,
                "priority": c.config.priority,
                "status": "queued",
                "config": c.config.model_dump(mode="json"),
                "created_by": c.by or c.source,
            }
        )
        await self.learner.bus.publish(
            QUEUED[c.config.priority](
                event_id=f"queued-{job_id}",
                job_id=job_id,
                priority=c.config.priority,
                workspace=c.workspace,
                correlation_id=c.event_id,
            )
        )
        log.info("learning_job_queued", job_id=job_id, priority=c.config.priority)
        return view(row, detail=True)

    async def promote(self, job_id: str, by: str, note: str) -> dict[str, Any]:
        """Publish the job's best checkpoint as the live policy of its workspace."""
        row = await self.store.get(job_id)
        if row is None:
            raise PermanentError(f"job_id: no learning job {job_id!r}")
        if row.status != "completed":
            raise PermanentError(f"job_id: job {job_id} is {row.status}; only a completed job")
        kept = await self.store.checkpoints(job_id)
        if not kept:
            raise PermanentError(f"job_id: job {job_id} has no checkpoint to promote")
        best: Any = max(kept, key=lambda k: (k.score is not None, k.score or 0.0, k.iteration))

        def promoted(stored: State | None, _runs: list[LearnedRun]) -> State:
            version = int((stored or {}).get("version", 0)) + 1
            return {"version": version, "policy": best.policy, "pending": []}

        state = await self.learner.repo.replace_state(row.workspace, promoted)
        trainer = self.learner.restore(state)
        await self.learner.checkpoint(row.workspace, trainer)
        await self.learner.publish_policy(row.workspace, trainer, f"promote-{job_id}")
        record = {
            "by": by,
            "note": note,
            "at": utcnow().isoformat(),
            "version": trainer.version,
            "checkpoint": best.id,
            "iteration": best.iteration,
            "score": best.score,
        }
        await self.store.set_promoted(job_id, record)
        log.info("learning_job_promoted", job_id=job_id, by=by, version=trainer.version)
        return record

    async def auto_promote(self, job_id: str) -> None:
        """Promote a completed job whose configuration asks for it, when its candidate
        was significantly better than the live policy."""
        row = await self.store.get(job_id)
        if row is None or not row.config.get("auto_promote") or not row.report:
            return
        if not (row.report.get("summary") or {}).get("significantly_better"):
            log.info("learning_job_not_promoted", job_id=job_id, reason="not significantly better")
            return
        await self.promote(job_id, "auto-promote", "significantly better than the live policy")
