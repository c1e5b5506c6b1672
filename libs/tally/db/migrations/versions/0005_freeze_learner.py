"""Durable freeze switches (quota) and the learner's trainer state.

``quota_switches`` holds each subscription's freeze switch, so a rebuild after Redis lost
its data restores it; ``learner_state`` holds each workspace's routing-policy trainer,
written with every run it learns from, so a crash between checkpoints loses nothing.

Revision ID: 0005_freeze_learner
Revises: 0004_wider_ids
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005_freeze_learner"
down_revision: str | None = "0004_wider_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_switches",
        sa.Column("namespace", sa.String(64), nullable=False),
        sa.Column("subscription", sa.String(64), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column(
            "changed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("namespace", "subscription", name="pk_quota_switches"),
        comment="writer: quota",
    )
    op.create_table(
        "learner_state",
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", postgresql.JSONB(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("workspace", name="pk_learner_state"),
        comment="writer: learner",
    )


def downgrade() -> None:
    op.drop_table("learner_state")
    op.drop_table("quota_switches")
