"""Money in integer micro-dollars; token rows say whether their price was known.

``token_usage.cost_usd``, ``quota_ledger.cost_usd`` and ``learner_runs.cost_usd`` (floats)
become ``cost_micros`` (BIGINT, 1 USD = 1,000,000). Existing rows are converted with
``round(cost_usd::numeric * 1e6)``: the float's decimal spelling, rounded half away from
zero (Postgres' ``round`` of numeric; costs are never negative, so this is half up). New
amounts are rounded half to even by ``tally.money``; the two differ only on exact
half-micro-dollar floats, which a stored float practically never is.

``token_usage.cost_known`` is false for a row whose model had no price; an existing row
with a NULL cost is marked so. ``quota_ledger.fallback_micros`` is the part of a settle
charged at the fallback price for such rows. The downgrade converts back to dollars.

Revision ID: 0006_money_micros
Revises: 0005_freeze_learner
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_money_micros"
down_revision: str | None = "0005_freeze_learner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: (table, the old dollars column is NOT NULL)
MONEY = (("token_usage", False), ("quota_ledger", True), ("learner_runs", True))


def upgrade() -> None:
    for table, required in MONEY:
        op.add_column(table, sa.Column("cost_micros", sa.BigInteger()))
        op.execute(f"UPDATE {table} SET cost_micros = round(cost_usd::numeric * 1000000)::bigint")
        if required:
            op.alter_column(table, "cost_micros", nullable=False)
        op.drop_column(table, "cost_usd")
    op.add_column(
        "token_usage",
        sa.Column("cost_known", sa.Boolean(), nullable=False, server_default="true"),
    )
    op.execute("UPDATE token_usage SET cost_known = false WHERE cost_micros IS NULL")
    op.add_column(
        "quota_ledger",
        sa.Column("fallback_micros", sa.BigInteger(), nullable=False, server_default="0"),
    )


def downgrade() -> None:
    op.drop_column("quota_ledger", "fallback_micros")
    op.drop_column("token_usage", "cost_known")
    for table, required in MONEY:
        op.add_column(table, sa.Column("cost_usd", sa.Float()))
        op.execute(f"UPDATE {table} SET cost_usd = cost_micros / 1000000.0")
        if required:
            op.alter_column(table, "cost_usd", nullable=False)
        op.drop_column(table, "cost_micros")
