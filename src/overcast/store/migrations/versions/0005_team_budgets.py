"""Teams carry a monthly budget: list-price dollars (on-demand and spot use) a team may spend per UTC
calendar month; NULL is no budget (every existing team keeps none).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("teams", sa.Column("monthly_budget", sa.Float()))


def downgrade() -> None:
    with op.batch_alter_table("teams") as batch:
        batch.drop_column("monthly_budget")
