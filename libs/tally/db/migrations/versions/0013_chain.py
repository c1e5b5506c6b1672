"""Facts about tasks that arrived before the task (``task.estimated``/``task.assigned``
overtaking ``task.created``), held by the tracker until the task is recorded.

Revision ID: 0013_chain
Revises: 0012_partitions
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013_chain"
down_revision: str | None = "0012_partitions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "task_facts_pending",
        sa.Column("task_id", sa.String(128), nullable=False),
        sa.Column("story_points", sa.Float()),
        sa.Column("hours_p50", sa.Float()),
        sa.Column("hours_p90", sa.Float()),
        sa.Column("value_score", sa.Float()),
        sa.Column("task_type", sa.String(64)),
        sa.Column("model", sa.String(128)),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_task_facts_pending")),
        comment="writer: tracker",
    )


def downgrade() -> None:
    op.drop_table("task_facts_pending")
