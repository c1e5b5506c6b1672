"""Learning jobs, their checkpoints and runs; the assigner's propensities; run signals.

Revision ID: 0011_learning_jobs
Revises: 0010_report_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0011_learning_jobs"
down_revision: str | None = "0010_report_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _now() -> sa.Column[object]:
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
    )


def upgrade() -> None:
    op.add_column("learner_runs", sa.Column("signals", JSONB()))
    op.create_table(
        "learning_jobs",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128)),
        sa.Column("priority", sa.String(2), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("config", JSONB(), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("progress", JSONB(), nullable=False, server_default="{}"),
        sa.Column("state", JSONB()),
        sa.Column("epoch", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("worker", sa.String(128)),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default="false"),
        sa.Column("spent_micros", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("alerts", JSONB(), nullable=False, server_default="[]"),
        sa.Column("report", JSONB()),
        sa.Column("error", sa.Text()),
        sa.Column("promoted", JSONB()),
        sa.Column("created_by", sa.String(128)),
        _now(),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_learning_jobs")),
        comment="writer: learner",
    )
    op.create_index(
        "ix_learning_jobs_workspace_created_at", "learning_jobs", ["workspace", "created_at"]
    )
    op.create_index("ix_learning_jobs_status", "learning_jobs", ["status"])
    op.create_table(
        "learning_checkpoints",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("iteration", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float()),
        sa.Column("evaluation", JSONB(), nullable=False),
        sa.Column("policy", JSONB(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learning_checkpoints")),
        comment="writer: learner",
    )
    op.create_index("ix_learning_checkpoints_job_id", "learning_checkpoints", ["job_id"])
    op.create_table(
        "learning_job_runs",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("run_id", sa.String(128), nullable=False),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("advantage", sa.Float(), nullable=False),
        sa.Column("held_out", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "run_id", name=op.f("pk_learning_job_runs")),
        comment="writer: learner",
    )
    op.create_table(
        "learner_propensities",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("model", sa.String(128), nullable=False),
        sa.Column("strategy", sa.String(64), nullable=False),
        sa.Column("propensity", sa.Float()),
        _now(),
        sa.PrimaryKeyConstraint("task_id", "attempt", name=op.f("pk_learner_propensities")),
        comment="writer: learner",
    )


def downgrade() -> None:
    op.drop_table("learner_propensities")
    op.drop_table("learning_job_runs")
    op.drop_index("ix_learning_checkpoints_job_id", table_name="learning_checkpoints")
    op.drop_table("learning_checkpoints")
    op.drop_index("ix_learning_jobs_status", table_name="learning_jobs")
    op.drop_index("ix_learning_jobs_workspace_created_at", table_name="learning_jobs")
    op.drop_table("learning_jobs")
    op.drop_column("learner_runs", "signals")
