"""Launch records carry what billing needs, frozen at launch: team, provider, purchase, nodes, GPUs per
node, accelerator and the list price per node-hour at launch time (a later catalog change must not
rewrite what past launches cost).

Rows recorded before this revision get their job's team and its current node count (the best
guess left); their provider, purchase, GPUs and price stay NULL: usage counts them as unpriced.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("team", sa.String(64)),
    ("provider", sa.String(64)),
    ("purchase", sa.String(16)),
    ("nodes", sa.Integer()),
    ("gpus_per_node", sa.Integer()),
    ("accelerator", sa.String(64)),
    ("price_per_node_hour", sa.Float()),
)


def upgrade() -> None:
    for name, type_ in _COLUMNS:
        op.add_column("launches", sa.Column(name, type_))
    op.execute(
        "UPDATE launches SET "
        "team = (SELECT jobs.team FROM jobs WHERE jobs.id = launches.job_id), "
        "nodes = (SELECT jobs.nodes FROM jobs WHERE jobs.id = launches.job_id)"
    )
    op.create_index("ix_launches_team_launched", "launches", ["team", "launched_at"])


def downgrade() -> None:
    op.drop_index("ix_launches_team_launched", "launches")
    with op.batch_alter_table("launches") as batch:
        for name, _ in reversed(_COLUMNS):
            batch.drop_column(name)
