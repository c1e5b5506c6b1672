"""The console: quota alerts as they fired, and the indexes behind its run and task lists.

Revision ID: 0014_console
Revises: 0013_chain
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014_console"
down_revision: str | None = "0013_chain"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LISTED_AT = sa.text("coalesce(started_at, created_at) DESC")


def upgrade() -> None:
    op.create_table(
        "quota_alerts",
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("workspace", sa.String(64), nullable=False),
        sa.Column("subscription", sa.String(128), nullable=False),
        sa.Column("period", sa.String(8), nullable=False),
        sa.Column("window_id", sa.String(32), nullable=False),
        sa.Column("metric", sa.String(8), nullable=False),
        sa.Column("threshold_pct", sa.Integer(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column("quota_limit", sa.BigInteger(), nullable=False),
        sa.Column("fired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "recorded_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_quota_alerts")),
        comment="writer: reporter",
    )
    op.create_index("ix_quota_alerts_fired_at", "quota_alerts", ["fired_at"])
    op.create_index("ix_quota_alerts_workspace_fired_at", "quota_alerts", ["workspace", "fired_at"])
    op.create_index("ix_runs_listed", "runs", [LISTED_AT, "run_id"])
    op.create_index("ix_runs_workspace_listed", "runs", ["workspace", LISTED_AT, "run_id"])
    op.create_index("ix_tasks_listed", "tasks", [sa.text("created_at DESC"), "task_id"])
    op.create_index(
        "ix_tasks_workspace_listed", "tasks", ["workspace", sa.text("created_at DESC"), "task_id"]
    )


def downgrade() -> None:
    for name, table in (
        ("ix_tasks_workspace_listed", "tasks"),
        ("ix_tasks_listed", "tasks"),
        ("ix_runs_workspace_listed", "runs"),
        ("ix_runs_listed", "runs"),
    ):
        op.drop_index(name, table_name=table)
    op.drop_table("quota_alerts")
