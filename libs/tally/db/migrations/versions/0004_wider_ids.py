"""Room for ids derived from long task ids: assignments and reservations.

An assignment id is ``<task id>-a<attempt>`` and a reservation id adds the model's name,
so with task ids of up to 128 characters they need more than the 64 first given.

Revision ID: 0004_wider_ids
Revises: 0003_learner
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_wider_ids"
down_revision: str | None = "0003_learner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, column, old length, new length)
WIDENED = (
    ("runs", "assignment_id", 64, 160),
    ("runs", "reservation_id", 64, 256),
    ("assignments", "assignment_id", 64, 160),
    ("assignments", "reservation_id", 64, 256),
    ("quota_ledger", "op_key", 160, 300),
    ("quota_ledger", "reservation_id", 64, 256),
)


def upgrade() -> None:
    for table, column, old, new in WIDENED:
        op.alter_column(table, column, type_=sa.String(new), existing_type=sa.String(old))


def downgrade() -> None:
    for table, column, old, new in WIDENED:
        op.alter_column(table, column, type_=sa.String(old), existing_type=sa.String(new))
