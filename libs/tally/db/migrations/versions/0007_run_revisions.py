"""A run's finish as the tracker saw it: how many events were announced, and when.

``expected_events`` is ``run.finished``'s ``event_count``; ``finish_seen_at`` is when the
tracker first handled the finish (its own clock), from which it waits a bounded time for
the run's events before recording what it has. Events that arrive later re-total the run.

Revision ID: 0007_run_revisions
Revises: 0006_money_micros
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_run_revisions"
down_revision: str | None = "0006_money_micros"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("expected_events", sa.Integer()))
    op.add_column("runs", sa.Column("finish_seen_at", sa.DateTime(timezone=True)))


def downgrade() -> None:
    op.drop_column("runs", "finish_seen_at")
    op.drop_column("runs", "expected_events")
