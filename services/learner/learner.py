"""The learner's state between events: per-workspace policy trainers and calibrations.

Handlers hand each recorded run to :class:`Learner`; it persists it through the repo,
updates the routing policy, schedules a (debounced) calibration and publishes what
changed. The daily pass and the ``learner.report`` answers live here too.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from typing import Any

import structlog

from services.learner import reports
from services.learner.calibration import error_trend, token_factors, velocity_fits
from services.learner.policy import Checkpointer, RoutingPolicy
from services.learner.repo import LearnerRepo
from services.learner.rewards import RewardRegistry, RunSignals
from services.learner.settings import LearnerSettings
from services.learner.stats import ModelScore, RunOutcome, update
from services.learner.training import LearnedRun, PolicyTrainer, evaluate, retrain
from tally import metrics
from tally.bus import Bus
from tally.events import (
    CalibrationUpdated,
    ModelScoreRow,
    PolicyUpdated,
    RunRecorded,
    ScoresUpdated,
)
from tally.events.learner import ErrorTrendRow
from tally.events.learning import LearnerReport, LearnerReportRequest

log = structlog.get_logger(__name__)

#: Task type and band used when a run's task had none recorded.
UNKNOWN = "unknown"


def outcome_of(e: RunRecorded) -> RunOutcome:
    """What the learner takes from a recorded run."""
    quality = e.quality_score if e.quality_score is not None else (1.0 if e.success else 0.0)
    return RunOutcome(
        model=e.model or UNKNOWN,
        task_type=e.task_type or UNKNOWN,
        band=e.band or UNKNOWN,
        story_points=e.story_points or 0.0,
        actual_hours=e.actual_hours,
        success=e.success,
        quality=quality,
        cost_usd=e.cost_usd,
        tokens=e.tokens.total,
    )


def signals_of(e: RunRecorded) -> RunSignals:
    """The reward's view of a run: worker calls count as tool use, events as steps."""
    return RunSignals(
        success=e.success,
        tool_calls=e.worker_calls,
        verification_passed=e.verifications_passed > 0,
        steps=e.event_count,
        quality=e.quality_score,
    )


def score_row(s: ModelScore) -> ModelScoreRow:
    return ModelScoreRow(
        model=s.model,
        task_type=s.task_type,
        band=s.band,
        samples=s.sample_size,
        velocity_mean=s.velocity.mean if s.velocity.count else None,
        velocity_std=s.velocity.stddev if s.velocity.count > 1 else None,
        velocity_best=s.velocity.max,
        velocity_worst=s.velocity.min,
        quality_mean=s.quality_mean,
        success_rate=s.success_rate,
        cost_mean=s.cost_mean,
        cost_per_point=s.cost_per_point,
        tokens_per_point=s.tokens_per_point,
        hours=s.total_hours,
    )


class Learner:
    """Everything the learner keeps between events, per workspace."""

    def __init__(
        self,
        bus: Bus,
        repo: LearnerRepo,
        settings: LearnerSettings,
        models: list[str],
        rewards: RewardRegistry,
    ) -> None:
        self.bus = bus
        self.repo = repo
        self.settings = settings
        self.models = models
        self.rewards = rewards
        self.checkpointer = Checkpointer(keep=settings.checkpoints_kept)
        self.trainers: dict[str, PolicyTrainer] = {}
        self._trainer_lock = asyncio.Lock()
        #: One policy change at a time per workspace, so versions are saved and published
        #: in order even though runs are handled concurrently.
        self._policy_locks: dict[str, asyncio.Lock] = {}
        self._scores_locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._calibrating: dict[str, asyncio.Task[None]] = {}

    # -- recorded runs --------------------------------------------------------------------
    async def record(self, e: RunRecorded) -> bool:
        """Learn from one recorded run; False if it was already learned (a redelivery)."""
        outcome = outcome_of(e)
        reward = self.rewards.for_context(task_type=outcome.task_type)(signals_of(e))
        log_row = {
            "run_id": e.run_id,
            "task_id": e.task_id,
            "workspace": e.workspace,
            "model": outcome.model,
            "task_type": outcome.task_type,
            "story_points": e.story_points,
            "estimated_hours": e.estimated_hours,
            "actual_hours": e.actual_hours,
            "error_pct": e.estimation_error * 100 if e.estimation_error is not None else None,
            "velocity": e.velocity,
            "reward": reward,
            "at": e.finished_at,
        }
        run_row = {
            "run_id": e.run_id,
            "workspace": e.workspace,
            "task_id": e.task_id,
            "model": outcome.model,
            "task_type": outcome.task_type,
            "band": outcome.band,
            "success": e.success,
            "quality": outcome.quality,
            "cost_micros": e.micros,
            "tokens": outcome.tokens,
            "reward": reward,
            "at": e.finished_at,
        }
        recorded = await self.repo.record_run(
            log_row,
            run_row,
            lambda current: update(
                current or ModelScore(outcome.model, outcome.task_type, outcome.band), outcome
            ),
        )
        if recorded is None:
            return False
        _, run = recorded
        metrics.SCORE_UPDATES.labels(outcome.model).inc()
        # Runs are handled concurrently: reading and publishing the snapshot under one lock
        # per workspace makes the last snapshot published include every committed run.
        async with self._scores_locks.setdefault(e.workspace, asyncio.Lock()):
            rows = tuple(score_row(s) for s in await self.repo.scores(e.workspace))
            await self.bus.publish(e.child(ScoresUpdated, scores=rows))
        await self.learn_policy(e.workspace, run, e)
        self.schedule_calibration(e.workspace)
        return True

    # -- routing policy -------------------------------------------------------------------
    def new_policy(self) -> RoutingPolicy:
        s = self.settings
        return RoutingPolicy(
            self.models,
            floor=s.floor,
            learning_rate=s.learning_rate,
            clip=s.clip,
            cost_weight=s.cost_weight,
            pool_strength=s.pool_strength,
        )

    async def trainer(self, workspace: str) -> PolicyTrainer:
        """The workspace's trainer, resumed from its newest checkpoint on first use."""
        async with self._trainer_lock:
            if workspace not in self.trainers:
                stored = await self.repo.latest_checkpoint(workspace)
                policy = RoutingPolicy.from_dict(stored.policy) if stored else self.new_policy()
                for model in self.models:
                    if model not in policy.models:
                        policy.models.append(model)
                self.trainers[workspace] = PolicyTrainer(
                    policy,
                    group_size=self.settings.group_size,
                    held_out_share=self.settings.held_out_share,
                    version=stored.version if stored else 0,
                )
                if stored:
                    log.info("policy_resumed", workspace=workspace, version=stored.version)
            return self.trainers[workspace]

    async def learn_policy(self, workspace: str, run: LearnedRun, cause: RunRecorded) -> None:
        """Feed a run to the policy; publish (and maybe checkpoint) when it changed."""
        trainer = await self.trainer(workspace)
        async with self._policy_locks.setdefault(workspace, asyncio.Lock()):
            if trainer.observe(run) is None:
                return
            if trainer.version % self.settings.checkpoint_every == 0:
                await self.checkpoint(workspace, trainer)
            await self.publish_policy(workspace, trainer, cause.correlation_id or cause.event_id)

    async def checkpoint(self, workspace: str, trainer: PolicyTrainer) -> int:
        """Save the policy with its held-out score; keep the best few and the newest."""
        runs = await self.repo.learned_runs(workspace)
        score = evaluate(trainer.policy, runs, self.settings.held_out_share).policy
        return await self.repo.save_checkpoint(
            workspace, trainer.version, score, trainer.policy.to_dict(), self.checkpointer.retain
        )

    async def publish_policy(
        self, workspace: str, trainer: PolicyTrainer, correlation_id: str | None = None
    ) -> None:
        await self.bus.publish(
            PolicyUpdated(
                event_id=f"policy-{workspace}-{trainer.version}",
                workspace=workspace,
                correlation_id=correlation_id,
                version=trainer.version,
                probabilities=trainer.probabilities(),
                models=tuple(trainer.policy.models),
            )
        )

    # -- calibration ----------------------------------------------------------------------
    def schedule_calibration(self, workspace: str) -> None:
        """Recalibrate ``workspace`` after the debounce delay, once for a burst of runs."""
        self._dirty.add(workspace)
        if workspace not in self._calibrating:
            self._calibrating[workspace] = asyncio.create_task(self._calibrate_soon(workspace))

    async def _calibrate_soon(self, workspace: str) -> None:
        try:
            # A run recorded while calibrating marks the workspace dirty again: go round.
            while workspace in self._dirty:
                await asyncio.sleep(self.settings.calibration_debounce_s)
                self._dirty.discard(workspace)
                await self.calibrate(workspace)
        except Exception as exc:  # a background task must log its failure, not vanish
            log.error("calibration_failed", workspace=workspace, error=repr(exc))
        finally:
            self._calibrating.pop(workspace, None)

    async def calibrate(self, workspace: str) -> CalibrationUpdated:
        """Fit velocity and token factors from the workspace's history; persist and publish."""
        s = self.settings
        fits = velocity_fits(await self.repo.velocity_rows(workspace), s.velocity_min_samples)
        factors = token_factors(await self.repo.token_rows(workspace), s.token_min_samples)
        logs = await self.repo.velocity_logs(workspace)
        errors = [r["error_pct"] / 100.0 for r in logs if r.get("error_pct") is not None]
        trend = error_trend(errors, s.trend_window)
        event = CalibrationUpdated(
            workspace=workspace,
            velocity={k: (f.mu, f.sigma, f.samples) for k, f in fits.items()},
            token_factors=factors,
            error_trend=ErrorTrendRow(
                recent_mae=trend.recent_mae,
                previous_mae=trend.previous_mae,
                slope=trend.slope,
                samples=trend.samples,
                improving=trend.improving,
            ),
        )
        await self.repo.save_calibration(
            workspace, event.model_dump(mode="json", exclude={"occurred_at", "source"})
        )
        await self.bus.publish(event)
        return event

    # -- the daily pass -------------------------------------------------------------------
    async def relearn(self, workspace: str) -> dict[str, Any]:
        """Recompute calibration and policy from the full history; store what changed."""
        async with self._policy_locks.setdefault(workspace, asyncio.Lock()):
            return await self._relearn(workspace)

    async def _relearn(self, workspace: str) -> dict[str, Any]:
        before_cal = await self.repo.latest_calibration(workspace) or {}
        after_cal = await self.calibrate(workspace)
        current = await self.trainer(workspace)
        runs = await self.repo.learned_runs(workspace)
        s = self.settings
        fresh = retrain(
            runs,
            current.policy,
            group_size=s.group_size,
            held_out_share=s.held_out_share,
            gamma=s.gamma,
        )
        before_eval = evaluate(current.policy, runs, s.held_out_share)
        after_eval = evaluate(fresh.policy, runs, s.held_out_share)
        fresh.version = current.version + 1
        fresh.pending = current.pending
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
        self.trainers[workspace] = fresh
        await self.checkpoint(workspace, fresh)
        await self.publish_policy(workspace, fresh)
        await self.repo.save_report(workspace, report)
        log.info("relearned", workspace=workspace, runs=len(runs), version=fresh.version)
        return report

    async def relearn_all(self) -> None:
        for workspace in await self.repo.workspaces():
            await self.relearn(workspace)

    async def daily(self, now: datetime | None = None) -> None:
        """Run :meth:`relearn_all` every day at ``daily_at`` (UTC), until cancelled."""
        while True:
            wait = seconds_until(self.settings.daily_at, now or datetime.now(UTC))
            now = None
            await asyncio.sleep(wait)
            try:
                await self.relearn_all()
            except Exception as exc:  # tomorrow's pass must still run
                log.error("daily_learning_failed", error=repr(exc))

    async def close(self) -> None:
        """Stop background calibrations (their state is rebuilt from Postgres)."""
        for task in list(self._calibrating.values()):
            task.cancel()
        await asyncio.gather(*self._calibrating.values(), return_exceptions=True)

    # -- reports --------------------------------------------------------------------------
    async def report(self, r: LearnerReportRequest) -> LearnerReport:
        """Answer a ``learner.report`` request for the request's workspace."""
        ws = r.workspace
        data: dict[str, Any]
        if r.kind == "velocity":
            since = datetime.now(UTC) - timedelta(days=r.days)
            logs = await self.repo.velocity_logs(ws)
            data = {
                "days": r.days,
                "trend": reports.velocity_trend(x for x in logs if x["at"] >= since),
                "models": reports.model_comparison(await self.repo.scores(ws)),
                "accuracy": reports.accuracy(logs, self.settings.trend_window),
            }
        elif r.kind == "models":
            trainer = await self.trainer(ws)
            data = {
                "scores": [score_row(s).model_dump() for s in await self.repo.scores(ws) if s.runs],
                "policy": {"version": trainer.version, "probabilities": trainer.probabilities()},
                "checkpoints": [
                    {"id": c.checkpoint.id, "version": c.version, "score": c.checkpoint.score}
                    for c in await self.repo.checkpoints(ws)
                ],
            }
        elif r.kind == "experiment":
            data = await self.experiment(ws, r.experiment or "")
        else:
            latest = await self.repo.latest_report(ws)
            data = {"at": latest[0].isoformat(), **latest[1]} if latest else {}
        return LearnerReport(kind=r.kind, workspace=ws, data=data)

    async def experiment(self, workspace: str, name: str) -> dict[str, Any]:
        trainer = await self.trainer(workspace)
        runs = await self.repo.learned_runs(workspace)
        held_out = evaluate(trainer.policy, runs, self.settings.held_out_share)
        return {
            "experiment": name,
            "known": await self.repo.experiment_exists(name),
            **reports.experiment_summary(
                await self.repo.arm_runs(workspace, name), self.settings.ab_min_samples
            ),
            "held_out": vars(held_out),
        }


def seconds_until(at: time, now: datetime) -> float:
    """Seconds from ``now`` to the next time of day ``at`` (UTC); a full day if it is now."""
    target = now.astimezone(UTC).replace(
        hour=at.hour, minute=at.minute, second=at.second, microsecond=0
    )
    if target <= now:
        target += timedelta(days=1)
    return (target - now).total_seconds()
