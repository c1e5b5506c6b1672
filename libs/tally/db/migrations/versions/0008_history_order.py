"""Imported history keeps its import order; estimates on the workspace's own point scale.

``history_tasks.position`` numbers rows as they are imported (an identity column), so a
history without dates is read back in the order of its file rather than sorted by task id
as a string (which put ``XD-1000`` before ``XD-999``). ``estimates.story_points`` becomes a
float: a workspace that estimates in 0.5 or 40 points is estimated on that scale.

Revision ID: 0008_history_order
Revises: 0007_run_revisions
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_history_order"
down_revision: str | None = "0007_run_revisions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "history_tasks",
        sa.Column("position", sa.BigInteger(), sa.Identity(), nullable=False),
    )
    op.create_index(
        "ix_history_tasks_workspace_position", "history_tasks", ["workspace", "position"]
    )
    op.alter_column("estimates", "story_points", type_=sa.Float(), existing_type=sa.Integer())


def downgrade() -> None:
    op.alter_column(
        "estimates",
        "story_points",
        type_=sa.Integer(),
        existing_type=sa.Float(),
        postgresql_using="round(story_points)::integer",
    )
    op.drop_index("ix_history_tasks_workspace_position", table_name="history_tasks")
    op.drop_column("history_tasks", "position")
