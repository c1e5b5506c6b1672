"""The learner: each recorded run updates scores, the routing policy and calibration.

Handlers hand each recorded run to :class:`Learner`. In one transaction the repo stores the
run, its score row and the workspace's policy trainer with the run learned (see
:mod:`services.learner.policy_store`): a crash loses nothing and a redelivered run changes
nothing. Then the learner publishes what changed, checkpoints every few versions and
schedules a (debounced) calibration. The daily pass is in :mod:`services.learner.daily`.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from services.learner import reports
from services.learner.calibration import error_trend, token_factors, velocity_fits
from services.learner.policy import Checkpointer, RoutingPolicy
from services.learner.policy_store import State
from services.learner.repo import LearnerRepo
from services.learner.rewards import RewardRegistry, RunSignals
from services.learner.settings import LearnerSettings
from services.learner.stats import ModelScore, RunFigures, RunOutcome, update
from services.learner.training import (
    LearnedRun,
    PolicyTrainer,
    evaluate,
)
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
        #: Per workspace: its runs are learned and announced one at a time.
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._calibrating: dict[str, asyncio.Task[None]] = {}

    # -- recorded runs --------------------------------------------------------------------
    async def record(self, e: RunRecorded) -> bool:
        """Learn from one recorded run; False if it was already learned (a redelivery).

        The run is filed under the task type and band the estimator recorded: the class
        the assigner routes by, whatever the tracker knew when it totalled the run (its
        band comes from ``task.estimated``, which may reach it after ``run.finished``).
        """
        estimated = await self.repo.estimated_class(e.task_id)
        if estimated is not None:
            e = e.model_copy(
                update={"task_type": estimated[0] or e.task_type, "band": estimated[1] or e.band}
            )
        outcome = outcome_of(e)
        if UNKNOWN in (outcome.task_type, outcome.band):
            metrics.UNFILED_RUNS.of("learner").inc()
            log.warning("run_filed_under_unknown", run_id=e.run_id, task_id=e.task_id)
        signals = signals_of(e)
        reward = self.rewards.for_context(task_type=outcome.task_type)(signals)
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
            "signals": asdict(signals),
        }
        # One run of a workspace at a time (the database serialises them anyway): score
        # snapshots, policy versions and checkpoints go out in the order they were made.
        async with self._locks.setdefault(e.workspace, asyncio.Lock()):
            recorded = await self.repo.record_run(
                log_row,
                run_row,
                lambda current: update(
                    current or ModelScore(outcome.model, outcome.task_type, outcome.band),
                    outcome,
                ),
                self.learn,
            )
            if recorded is None:
                # Learned before. A re-total (more events than the revision learned)
                # revises the run's cost and tokens; the outcome is learned once.
                revised = await self.repo.revise_run(
                    e.run_id, RunFigures(e.micros, outcome.tokens), asdict(signals), self.revise
                )
                if revised is not None:
                    metrics.SCORE_UPDATES.labels(outcome.model).inc()
                    rows = tuple(score_row(s) for s in await self.repo.scores(e.workspace))
                    await self.bus.publish(e.child(ScoresUpdated, scores=rows))
                # The policy it led to is announced again (same event id), in case the
                # process that learned it stopped before announcing it.
                state = await self.repo.state(e.workspace)
                if state is not None and state["version"] > 0:
                    await self.publish_policy(e.workspace, self.restore(state), e.correlation_id)
                return False
            metrics.SCORE_UPDATES.labels(outcome.model).inc()
            rows = tuple(score_row(s) for s in await self.repo.scores(e.workspace))
            await self.bus.publish(e.child(ScoresUpdated, scores=rows))
            if recorded.updated:
                trainer = self.restore(recorded.state)
                if trainer.version % self.settings.checkpoint_every == 0:
                    await self.checkpoint(e.workspace, trainer)
                await self.publish_policy(e.workspace, trainer, e.correlation_id or e.event_id)
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

    def restore(self, state: State | None) -> PolicyTrainer:
        """A trainer from stored state (a new policy without it); registry models added."""
        s = self.settings
        trainer = (
            PolicyTrainer.from_state(
                state, group_size=s.group_size, held_out_share=s.held_out_share
            )
            if state is not None
            else PolicyTrainer(
                self.new_policy(), group_size=s.group_size, held_out_share=s.held_out_share
            )
        )
        for model in self.models:
            if model not in trainer.policy.models:
                trainer.policy.models.append(model)
        # Pooling is a setting, not learned state: a state saved when it was a fixed 10
        # follows the setting now (None: learned from the classes' spread).
        trainer.policy.pool_strength = s.pool_strength
        return trainer

    def learn(self, run: LearnedRun, state: State | None) -> tuple[State, bool]:
        """Feed one run to the workspace's trainer state; whether its version moved.

        Called inside the transaction that records the run (see ``LearnerRepo.record_run``).
        """
        trainer = self.restore(state)
        updated = trainer.observe(run) is not None
        return trainer.to_state(), updated

    def revise(self, state: State, run: LearnedRun, cost_usd: float) -> State:
        """The trainer state with a re-totalled run's new cost (``LearnerRepo.revise_run``)."""
        trainer = self.restore(state)
        trainer.revise_cost(run, cost_usd)
        return trainer.to_state()

    async def trainer(self, workspace: str) -> PolicyTrainer:
        """The workspace's trainer as last committed (from its newest checkpoint, or new,
        if it has none yet)."""
        return self.restore(await self.repo.state(workspace))

    async def checkpoint(self, workspace: str, trainer: PolicyTrainer) -> int:
        """Save the policy with its held-out score; keep the best few and the newest.

        ``trainer`` must be this call's own (evaluation runs in a worker thread).
        """
        runs = await self.repo.learned_runs(workspace)
        held_out = await asyncio.to_thread(
            evaluate, trainer.policy, runs, self.settings.held_out_share
        )
        return await self.repo.save_checkpoint(
            workspace,
            trainer.version,
            held_out.policy,
            trainer.policy.to_dict(),
            self.checkpointer.retain,
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
                posteriors=trainer.posteriors(),
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
        except Exception as exc:  # a background task must not vanish: logged and counted
            log.error("calibration_failed", workspace=workspace, error=repr(exc))
            metrics.CONSUMER_RESTARTS.labels("learner", "calibration").inc()
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
