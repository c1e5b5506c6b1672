"""Running one learning job from where it stands to its end.

A worker claims the job, loads its data (the runs of its window, measured from when the
job was created, so a resumed job sees the same runs), and restores the trainer from the
job's stored state, or builds a fresh candidate. Each iteration then runs in a worker
thread and is written with its state in one transaction (see :mod:`.store`); every
``eval_every`` iterations, and after the last, the job is ``evaluating`` while the
candidate is judged on held-out tasks, and the evaluation is saved as a checkpoint. The
job stops early, at the next iteration, when it is cancelled or its compute budget is
spent (alerts at 75% and 90% first).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from services.learner.checkpoints import Checkpointer
from services.learner.jobs import engine, evaluation
from services.learner.jobs.store import JobStore
from services.learner.policy import RoutingPolicy
from services.learner.policy_store import PolicyStore
from services.learner.rewards import ShapingConfig, default_registry
from services.learner.training import PolicyTrainer
from tally import metrics
from tally.errors import is_unavailable
from tally.events.jobs import JobConfig
from tally.money import micros_to_usd, usd_to_micros

log = structlog.get_logger(__name__)

#: Budget shares that raise an alert; at 1.0 the job stops.
ALERT_LEVELS = (0.75, 0.9)
#: Iterations of history a job's state keeps (the newest).
HISTORY = 50


def window(spec: str) -> timedelta:
    """``30d``, ``12h`` or ``2w`` as a duration."""
    n, unit = int(spec[:-1]), spec[-1]
    return timedelta(hours=n) if unit == "h" else timedelta(days=n * (7 if unit == "w" else 1))


def shaping(weights: dict[str, float]) -> ShapingConfig:
    """The shaped reward's weights, the job's over the defaults."""
    given: dict[str, Any] = dict(weights)
    if "step_budget" in given:
        given["step_budget"] = int(given["step_budget"])
    return ShapingConfig(**given)


@dataclass
class Outcome:
    """How a worker's turn at a job ended: ``completed``, ``failed``, ``cancelled``,
    ``lost`` (another worker claimed it since), ``over`` (it had ended, or is unknown) or
    ``busy`` (a live worker has it: try again later)."""

    status: str


class JobRunner:
    """Runs jobs for one worker pool.

    Args:
        store: the job tables.
        policies: the workspace's live routing policy (to compare with).
        models: the model registry's names (a candidate starts with all of them).
        usd_per_cpu_hour: what a CPU hour of a job costs against its budget.
        keep: checkpoints kept per job (the best by score, and the newest).
    """

    def __init__(
        self,
        store: JobStore,
        policies: PolicyStore,
        models: list[str],
        *,
        usd_per_cpu_hour: float,
        keep: int = 5,
    ) -> None:
        self.store = store
        self.policies = policies
        self.models = models
        self.usd_per_cpu_hour = usd_per_cpu_hour
        self.checkpointer = Checkpointer(keep=keep)

    async def claim(self, job_id: str, worker: str, stale_after_s: float) -> Any:
        """Claim the job (see :meth:`JobStore.claim`): its row, or why not (a string)."""
        return await self.store.claim(job_id, worker, stale_after_s)

    async def run(self, row: Any) -> Outcome:
        """Run a claimed job to its end (or until another worker claims it)."""
        job_id, epoch = row.job_id, row.epoch
        log.info("learning_job_claimed", job_id=job_id, epoch=epoch, iteration=row.iteration)
        try:
            return await self._run(row, JobConfig.model_validate(row.config), epoch)
        except Exception as exc:
            if is_unavailable(exc):  # Postgres out of reach: the job is fine, try again
                raise
            # The job's own fault (its data, its configuration): it fails, loudly.
            log.exception("learning_job_failed", job_id=job_id)
            await self.store.finish(job_id, epoch, "failed", error=f"{type(exc).__name__}: {exc}")
            return Outcome("failed")

    async def _run(self, row: Any, config: JobConfig, epoch: int) -> Outcome:
        job_id = row.job_id
        reward = default_registry(shaping=shaping(config.reward_weights)).get(config.reward)
        recorded = await self.store.recorded_runs(
            row.workspace, row.created_at - window(config.window), row.created_at
        )
        runs = engine.job_runs(recorded, config, reward)
        classes = engine.by_class(runs)
        if not any(len(v) >= 2 for v in classes.values()):
            message = (
                f"no task class has two training runs in the window {config.window} "
                f"({len(runs)} runs matched, {sum(r.held_out for r in runs)} held out)"
            )
            await self.store.finish(job_id, epoch, "failed", error=message)
            return Outcome("failed")
        live = await self._live(row.workspace)
        state: dict[str, Any] = dict(row.state or {})
        if state:
            trainer = PolicyTrainer.from_state(
                state["trainer"], group_size=config.group_size, held_out_share=config.eval_share
            )
        else:
            trainer = engine.candidate(self.models, config, runs)
            adv = engine.advantages(runs, config.cost_weight)
            await self.store.save_job_runs(
                job_id,
                (
                    {
                        "run_id": r.run.run_id,
                        "reward": r.run.reward,
                        "advantage": adv[r.run.run_id],
                        "held_out": r.held_out,
                    }
                    for r in runs
                ),
            )
            state = {"history": [], "cpu_s": 0.0, "runs": len(runs), "evaluation": None}
        budget = usd_to_micros(config.budget_usd) if config.budget_usd else None
        alerts: list[float] = list(row.alerts or [])
        for it in range(int(row.iteration) + 1, config.iterations + 1):
            started = time.perf_counter()
            stats, cpu = await asyncio.to_thread(self._step, trainer, classes, config, it)
            state["cpu_s"] += cpu
            checkpoint = None
            if it % config.eval_every == 0 or it == config.iterations:
                if not await self.store.set_status(job_id, epoch, "evaluating"):
                    return Outcome("lost")
                judged = await asyncio.to_thread(
                    evaluation.evaluate, trainer.policy, live, runs, alpha=config.alpha
                )
                state["evaluation"] = {"iteration": it, **judged}
                checkpoint = {
                    "iteration": it,
                    "score": judged["score"],
                    "evaluation": judged,
                    "policy": trainer.policy.to_dict(),
                }
            state["history"] = [*state["history"], stats.to_dict()][-HISTORY:]
            state["trainer"] = trainer.to_state()
            spent = int(usd_to_micros(state["cpu_s"] * self.usd_per_cpu_hour / 3600))
            new_alerts = [
                a for a in ALERT_LEVELS if budget and spent >= a * budget and a not in alerts
            ]
            alerts += new_alerts
            progress = {
                **stats.to_dict(),
                "iterations": config.iterations,
                "runs": state["runs"],
                "evaluation": evaluation.summary(state["evaluation"] or {}),
            }
            cancel = await self.store.save_iteration(
                job_id,
                epoch,
                {
                    "iteration": it,
                    "state": state,
                    "progress": progress,
                    "status": "running",
                    "spent_micros": spent,
                    "alerts": alerts,
                },
                checkpoint,
                self.checkpointer.retain,
            )
            metrics.LEARNING_ITERATION_SECONDS.of("learner").observe(time.perf_counter() - started)
            for level in new_alerts:
                metrics.LEARNING_BUDGET_ALERTS.labels(f"{level * 100:.0f}").inc()
                log.warning("learning_job_budget_alert", job_id=job_id, share=level, spent=spent)
            if cancel is None:
                log.warning("learning_job_taken_over", job_id=job_id, epoch=epoch)
                return Outcome("lost")
            if cancel:
                await self.store.finish(job_id, epoch, "cancelled", error="cancelled on request")
                log.info("learning_job_cancelled", job_id=job_id, iteration=it)
                return Outcome("cancelled")
            if budget is not None and spent >= budget:
                metrics.LEARNING_BUDGET_ALERTS.labels("100").inc()
                message = (
                    f"budget: spent ${micros_to_usd(spent):.6f} of ${config.budget_usd} of compute "
                    f"after {it} of {config.iterations} iterations"
                )
                log.error("learning_job_budget_spent", job_id=job_id, iteration=it)
                await self.store.finish(job_id, epoch, "failed", error=message)
                return Outcome("failed")
        report = await self._report(job_id, config, state)
        if not await self.store.finish(job_id, epoch, "completed", report=report):
            return Outcome("lost")
        log.info("learning_job_completed", job_id=job_id, iterations=config.iterations)
        return Outcome("completed")

    def _step(
        self,
        trainer: PolicyTrainer,
        classes: dict[engine.Key, list[Any]],
        config: JobConfig,
        iteration: int,
    ) -> tuple[engine.IterationStats, float]:
        started = time.thread_time()
        stats = engine.iterate(trainer, classes, config, iteration)
        return stats, time.thread_time() - started

    async def _live(self, workspace: str) -> RoutingPolicy | None:
        state = await self.policies.state(workspace)
        return RoutingPolicy.from_dict(state["policy"]) if state else None

    async def _report(
        self, job_id: str, config: JobConfig, state: dict[str, Any]
    ) -> dict[str, Any]:
        final = state.get("evaluation") or {}
        kept = await self.store.checkpoints(job_id)
        best = max(kept, key=lambda c: (c.score is not None, c.score or 0.0), default=None)
        history = state.get("history", [])
        return {
            "summary": evaluation.summary(final),
            "evaluation": final,
            "iterations": config.iterations,
            "runs": state.get("runs"),
            "objective_first": history[0]["objective"] if history else None,
            "objective_last": history[-1]["objective"] if history else None,
            "cpu_s": round(state.get("cpu_s", 0.0), 6),
            "best_checkpoint": None
            if best is None
            else {"id": best.id, "iteration": best.iteration, "score": best.score},
            "config": config.model_dump(mode="json"),
        }
