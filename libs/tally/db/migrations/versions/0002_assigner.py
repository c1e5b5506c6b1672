"""assigner tasks, experiments, reservation expiry in the quota ledger

Revision ID: 0002_assigner
Revises: 0001
Create Date: 2026-11-23 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_assigner"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "assigner_tasks",
        sa.Column("namespace", sa.String(length=64), server_default="", nullable=False),
        sa.Column("task_id", sa.String(length=128), nullable=False),
        sa.Column("workspace", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempt", sa.Integer(), server_default="1", nullable=False),
        sa.Column("estimated", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("value_score", sa.Float(), server_default="0", nullable=False),
        sa.Column(
            "failed_models",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default="[]",
            nullable=False,
        ),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("retry_after", sa.DateTime(timezone=True), nullable=True),
        sa.Column("tries", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("namespace", "task_id", name=op.f("pk_assigner_tasks")),
        comment="writer: assigner",
    )
    op.create_index(
        "ix_assigner_tasks_namespace_status",
        "assigner_tasks",
        ["namespace", "status", "retry_after"],
    )
    op.create_table(
        "experiments",
        sa.Column("namespace", sa.String(length=64), server_default="", nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("task_type", sa.String(length=64), nullable=True),
        sa.Column("variants", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("active", sa.Boolean(), server_default="true", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("namespace", "name", name=op.f("pk_experiments")),
        comment="writer: assigner",
    )
    # A live reservation is restored from the ledger with its own expiry.
    op.add_column(
        "quota_ledger", sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("quota_ledger", "expires_at")
    op.drop_table("experiments")
    op.drop_index("ix_assigner_tasks_namespace_status", table_name="assigner_tasks")
    op.drop_table("assigner_tasks")
