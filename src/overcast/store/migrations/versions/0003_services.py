"""Inference services: the spec accepted through the API, its version and its controller's status.

Names are unique within a team (``uq_services_team_name``, also the index of a team's listing); the
id (``s-...``) names the service's replica launches, so two teams' services of one name never meet.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "services",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("team", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("lb_port", sa.Integer),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("submitted_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.UniqueConstraint("team", "name", name="uq_services_team_name"),
    )


def downgrade() -> None:
    op.drop_table("services")
