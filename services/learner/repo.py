"""The learner's queries.

It is the only writer of model_scores, velocity_logs, learner_runs, calibrations,
learning_reports and policy_checkpoints; it reads the estimator's ``estimates`` (token
estimates) and the assigner's ``assignments`` (experiment arms).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from services.learner.abtest import arm_name
from services.learner.calibration import VelocityRow
from services.learner.policy_store import (
    PolicyStore,
    State,
    learned_runs,
    load_state,
    lock_workspace,
    save_state,
)
from services.learner.stats import ModelScore, RunFigures, revise
from services.learner.training import LearnedRun
from services.learner.velocity_totals import add_velocity, history_velocity
from tally.db.tables import (
    assignments,
    calibrations,
    estimates,
    learner_runs,
    learning_reports,
    model_scores,
    velocity_logs,
)
from tally.money import micros_to_usd


@dataclass(frozen=True)
class Recorded:
    """What recording one run changed: its score row, the run, and the trainer state."""

    score: ModelScore
    run: LearnedRun
    state: State
    #: Whether the policy's preferences moved (a new version), not only its evidence.
    updated: bool


class LearnerRepo(PolicyStore):
    """The learner's tables; trainer state and checkpoints come from :class:`PolicyStore`."""

    # -- recording runs ------------------------------------------------------------------
    async def record_run(
        self,
        log_row: dict[str, Any],
        run_row: dict[str, Any],
        apply: Callable[[ModelScore | None], ModelScore],
        learn: Callable[[LearnedRun, State | None], tuple[State, bool]],
    ) -> Recorded | None:
        """Log a run, store its facts, apply it to its score row and to the policy, once.

        The velocity log's primary key is the run id: if the run was already logged (a
        redelivery, or the tracker recording it twice), nothing changes and None is
        returned. Otherwise, in one transaction: the log gets the type's historical
        velocity and the change against it, the run gets its attempt number and the
        task's estimated tokens, ``apply`` turns the current score into the new one, and
        ``learn`` turns the workspace's trainer state into the new one (and says whether
        the policy's version moved).
        """
        key = (run_row["workspace"], run_row["model"], run_row["task_type"], run_row["band"])
        async with self.engine.begin() as conn:
            history = await history_velocity(conn, key[0], key[2])
            velocity = log_row.get("velocity")
            log = {**log_row, "history_velocity": history, "change_pct": None}
            if history and velocity is not None:
                log["change_pct"] = (velocity - history) / history * 100.0
            inserted = await conn.execute(
                insert(velocity_logs).on_conflict_do_nothing().returning(velocity_logs.c.run_id),
                log,
            )
            if inserted.first() is None:
                return None
            if velocity is not None:
                await add_velocity(conn, key[0], key[2], velocity)
            earlier = await conn.scalar(
                select(func.count())
                .select_from(learner_runs)
                .where(learner_runs.c.task_id == run_row["task_id"])
            )
            estimated = await conn.scalar(
                select(
                    estimates.c.estimate["tokens"]["input_tokens"].as_integer()
                    + estimates.c.estimate["tokens"]["output_tokens"].as_integer()
                    + func.coalesce(
                        estimates.c.estimate["tokens"]["cached_input_tokens"].as_integer(), 0
                    )
                ).where(estimates.c.task_id == run_row["task_id"])
            )
            row = {**run_row, "attempt": int(earlier or 0) + 1, "estimated_tokens": estimated}
            await conn.execute(insert(learner_runs).on_conflict_do_nothing(), row)
            score = await self._apply_to_score(conn, key, apply)
            run = LearnedRun(
                row["run_id"],
                row["task_id"],
                row["model"],
                row["task_type"],
                row["band"],
                row["reward"],
                micros_to_usd(row["cost_micros"]),
                row["at"],
                row["attempt"],
            )
            state, updated = learn(run, await load_state(conn, key[0]))
            await save_state(conn, key[0], state)
            return Recorded(score, run, state, updated)

    async def revise_run(
        self,
        run_id: str,
        figures: RunFigures,
        signals: dict[str, Any],
        revise_policy: Callable[[State, LearnedRun, float], State],
    ) -> ModelScore | None:
        """Take a later revision of a learned run: its cost, tokens and signals, its score
        row's cost and token sums, and (through ``revise_policy(state, run as learned,
        new cost in dollars)``) the routing evidence's cost. None if the run is not
        learned yet, or the
        revision is not newer than the stored one (revisions are ordered by the events
        they total, ``signals["steps"]``; a duplicate or a late older one changes nothing).
        """
        r = learner_runs.c
        async with self.engine.begin() as conn:
            old = (
                await conn.execute(
                    select(learner_runs)
                    .where(
                        r.run_id == run_id,
                        func.coalesce(r.signals["steps"].as_integer(), 0) < signals["steps"],
                    )
                    .with_for_update()
                )
            ).first()
            if old is None:
                return None
            await conn.execute(
                learner_runs.update()
                .where(r.run_id == run_id)
                .values(cost_micros=figures.cost_micros, tokens=figures.tokens, signals=signals)
            )
            before = RunFigures(old.cost_micros, old.tokens)
            key = (old.workspace, old.model, old.task_type, old.band)
            score = await self._apply_to_score(
                conn,
                key,
                lambda current: revise(
                    current or ModelScore(old.model, old.task_type, old.band), before, figures
                ),
            )
            # The workspace's lock is held (taken for the score): the trainer state is ours.
            state = await load_state(conn, old.workspace)
            if state is not None:
                learned = LearnedRun(
                    old.run_id,
                    old.task_id,
                    old.model,
                    old.task_type,
                    old.band,
                    old.reward,
                    micros_to_usd(old.cost_micros),
                    old.at,
                    old.attempt,
                )
                revised = revise_policy(state, learned, micros_to_usd(figures.cost_micros))
                await save_state(conn, old.workspace, revised)
            return score

    async def _apply_to_score(
        self,
        conn: AsyncConnection,
        key: tuple[str, str, str, str],
        apply: Callable[[ModelScore | None], ModelScore],
    ) -> ModelScore:
        """Turn the score row of ``key`` (workspace, model, task type, band) into
        ``apply`` of it, holding the workspace's lock and then the row's to the commit."""
        # The workspace's lock first, then the score row's: every run takes them in
        # this order.
        await lock_workspace(conn, key[0])
        # Runs are learned concurrently: one lock per score row, held to the commit, so
        # two runs of the same model and class never read the same old row. (A row
        # lock would not do: the first two runs of a class find no row to lock.)
        await conn.execute(
            select(func.pg_advisory_xact_lock(func.hashtextextended("|".join(key), 0)))
        )
        score = apply(await self._score(conn, *key))
        stmt = insert(model_scores).values(
            workspace=key[0],
            model=key[1],
            task_type=key[2],
            band=key[3],
            samples=score.sample_size,
            stats=score.to_dict(),
        )
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["workspace", "model", "task_type", "band"],
                set_={
                    "samples": stmt.excluded.samples,
                    "stats": stmt.excluded.stats,
                    "updated_at": func.now(),
                },
            )
        )
        return score

    async def estimated_class(self, task_id: str) -> tuple[str | None, str | None] | None:
        """The task type and band the estimator recorded for a task (None: no estimate)."""
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(estimates.c.estimate["task_type"].as_string(), estimates.c.band).where(
                        estimates.c.task_id == task_id
                    )
                )
            ).first()
        return (row[0], row[1]) if row is not None else None

    @staticmethod
    async def _score(
        conn: AsyncConnection, workspace: str, model: str, task_type: str, band: str
    ) -> ModelScore | None:
        row = (
            await conn.execute(
                select(model_scores.c.stats).where(
                    model_scores.c.workspace == workspace,
                    model_scores.c.model == model,
                    model_scores.c.task_type == task_type,
                    model_scores.c.band == band,
                )
            )
        ).first()
        return ModelScore.from_dict(row.stats) if row else None

    async def scores(self, workspace: str) -> list[ModelScore]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(model_scores.c.stats).where(model_scores.c.workspace == workspace)
                )
            ).all()
        return [ModelScore.from_dict(r.stats) for r in rows]

    # -- what calibration and the policy learn from -----------------------------------------
    async def workspaces(self) -> list[str]:
        """Workspaces with at least one recorded run."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(learner_runs.c.workspace).distinct())).all()
        return sorted(r.workspace for r in rows)

    async def velocity_rows(self, workspace: str) -> list[VelocityRow]:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        velocity_logs.c.model, velocity_logs.c.task_type, velocity_logs.c.velocity
                    ).where(
                        velocity_logs.c.workspace == workspace,
                        velocity_logs.c.velocity.is_not(None),
                    )
                )
            ).all()
        return [VelocityRow(r.model or "", r.task_type or "", r.velocity) for r in rows]

    async def token_rows(self, workspace: str) -> list[tuple[str, int, int]]:
        """``(task_type, actual, estimated)`` tokens of runs whose task was estimated."""
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(
                        learner_runs.c.task_type,
                        learner_runs.c.tokens,
                        learner_runs.c.estimated_tokens,
                    ).where(
                        learner_runs.c.workspace == workspace,
                        learner_runs.c.estimated_tokens.is_not(None),
                    )
                )
            ).all()
        return [(r.task_type, int(r.tokens), int(r.estimated_tokens)) for r in rows]

    async def velocity_logs(
        self, workspace: str, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Velocity logs of a workspace, oldest first."""
        stmt = select(velocity_logs).where(velocity_logs.c.workspace == workspace)
        if since is not None:
            stmt = stmt.where(velocity_logs.c.at >= since)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt.order_by(velocity_logs.c.at))).mappings().all()
        return [dict(r) for r in rows]

    async def learned_runs(self, workspace: str) -> list[LearnedRun]:
        """Every recorded run of a workspace, oldest first."""
        async with self.engine.connect() as conn:
            return await learned_runs(conn, workspace)

    async def arm_runs(self, workspace: str, experiment: str) -> list[dict[str, Any]]:
        """Runs of the workspace's tasks that the assigner assigned under ``experiment``.

        The assigner records each assignment's arm as ``<experiment>:<variant>`` in
        ``assignments.arm``; every run of such a task counts for its variant (a task's
        arm is fixed by its id, so escalated attempts stay in the same arm).
        """
        # One row per (task, arm): a task's attempts share its arm, and each run counts once.
        armed = (
            select(assignments.c.task_id, assignments.c.arm)
            .where(
                assignments.c.workspace == workspace,
                assignments.c.arm.startswith(f"{experiment}:", autoescape=True),
            )
            .distinct()
            .subquery()
        )
        stmt = select(
            armed.c.arm,
            learner_runs.c.task_id,
            learner_runs.c.reward,
            learner_runs.c.quality,
            learner_runs.c.cost_micros,
            learner_runs.c.success,
        ).join(
            armed,
            (learner_runs.c.task_id == armed.c.task_id) & (learner_runs.c.workspace == workspace),
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        out = []
        for r in rows:
            name = arm_name(r.arm, experiment)
            if name is None:
                continue
            out.append(
                {
                    "arm": name,
                    "task_id": r.task_id,
                    "reward": r.reward,
                    "quality": r.quality,
                    "cost_usd": micros_to_usd(r.cost_micros),
                    "success": r.success,
                }
            )
        return out

    async def experiment_exists(self, name: str) -> bool | None:
        """Whether the assigner knows the experiment; None if its table is not there yet."""
        async with self.engine.connect() as conn:
            present = await conn.scalar(text("SELECT to_regclass('experiments') IS NOT NULL"))
            if not present:
                return None
            found = await conn.scalar(
                text("SELECT count(*) FROM experiments WHERE name = :name").bindparams(name=name)
            )
        return bool(found)

    # -- calibrations and reports ---------------------------------------------------------
    async def save_calibration(self, workspace: str, calibration: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                insert(calibrations), {"workspace": workspace, "calibration": calibration}
            )

    async def latest_calibration(self, workspace: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            value: dict[str, Any] | None = await conn.scalar(
                select(calibrations.c.calibration)
                .where(calibrations.c.workspace == workspace)
                .order_by(calibrations.c.id.desc())
                .limit(1)
            )
        return value

    async def save_report(self, workspace: str, report: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(learning_reports), {"workspace": workspace, "report": report})

    async def latest_report(self, workspace: str) -> tuple[datetime, dict[str, Any]] | None:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(learning_reports.c.created_at, learning_reports.c.report)
                    .where(learning_reports.c.workspace == workspace)
                    .order_by(learning_reports.c.id.desc())
                    .limit(1)
                )
            ).first()
        return (row.created_at, row.report) if row else None
