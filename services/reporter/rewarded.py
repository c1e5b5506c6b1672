"""Runs with rewards, as ``/export/runs?with_rewards=true`` serves them (reads the
learner's ``learner_runs`` and ``learning_job_runs``)."""

from __future__ import annotations

from sqlalchemy import FromClause, func, select

from tally.db.tables import learner_runs, learning_job_runs, runs


def rewarded_runs() -> FromClause:
    """Runs with the reward the learner gave each and its group-relative advantage within
    its task class (type and band, in its workspace): ``(r - mean) / std``, 0 when every
    run of the class earned the same."""
    lr = learner_runs.c
    group = (lr.workspace, lr.task_type, lr.band)
    spread = func.nullif(func.stddev_pop(lr.reward).over(partition_by=group), 0)
    mean = func.avg(lr.reward).over(partition_by=group)
    advantage = func.coalesce((lr.reward - mean) / spread, 0.0)
    learned = select(
        lr.run_id,
        lr.reward,
        advantage.label("advantage"),
        lr.success.label("learned_success"),
    ).subquery()
    return (
        select(runs, learned.c.reward, learned.c.advantage, learned.c.learned_success)
        .join(learned, learned.c.run_id == runs.c.run_id)
        .subquery("runs_with_rewards")
    )


def job_runs() -> FromClause:
    """Runs a learning job learned from, with the reward and advantage the job gave them."""
    jr = learning_job_runs.c
    return (
        select(
            runs,
            # ``runs.job_id`` is the agent's job; this is the learning job's.
            jr.job_id.label("learning_job_id"),
            jr.reward,
            jr.advantage,
            jr.held_out,
            learner_runs.c.success.label("learned_success"),
        )
        .join(learning_job_runs, jr.run_id == runs.c.run_id)
        .join(learner_runs, learner_runs.c.run_id == runs.c.run_id)
        .subquery("job_runs")
    )
