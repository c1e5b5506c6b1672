"""learner runs, calibrations and learning reports

Revision ID: 0003_learner
Revises: 0002_assigner
Create Date: 2026-11-23 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_learner"
down_revision: str | None = "0002_assigner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _created() -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(
        "created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "learner_runs",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("workspace", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=128), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=False),
        sa.Column("band", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("quality", sa.Float(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("tokens", sa.BigInteger(), nullable=False),
        sa.Column("estimated_tokens", sa.BigInteger(), nullable=True),
        sa.Column("reward", sa.Float(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_learner_runs")),
        comment="writer: learner",
    )
    op.create_index("ix_learner_runs_workspace_at", "learner_runs", ["workspace", "at"])
    op.create_index("ix_learner_runs_task_id", "learner_runs", ["task_id"])
    op.create_table(
        "calibrations",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("workspace", sa.String(length=64), nullable=False),
        sa.Column("calibration", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calibrations")),
        comment="writer: learner",
    )
    op.create_index(
        "ix_calibrations_workspace_created_at", "calibrations", ["workspace", "created_at"]
    )
    op.create_table(
        "learning_reports",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("workspace", sa.String(length=64), nullable=False),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        _created(),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_learning_reports")),
        comment="writer: learner",
    )
    # Resuming reads the newest checkpoint of a workspace.
    op.create_index(
        "ix_policy_checkpoints_workspace_created_at",
        "policy_checkpoints",
        ["workspace", "created_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_policy_checkpoints_workspace_created_at", table_name="policy_checkpoints")
    op.drop_table("learning_reports")
    op.drop_index("ix_calibrations_workspace_created_at", table_name="calibrations")
    op.drop_table("calibrations")
    op.drop_index("ix_learner_runs_task_id", table_name="learner_runs")
    op.drop_index("ix_learner_runs_workspace_at", table_name="learner_runs")
    op.drop_table("learner_runs")
