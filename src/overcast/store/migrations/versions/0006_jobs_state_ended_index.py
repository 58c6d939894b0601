"""Jobs index on (state, ended_at) instead of state alone: finished jobs within a window.

The estimate factors (``store/estimates.py``) read each team's recently finished jobs, ``state IN
(succeeded, failed, cancelled) AND ended_at >= now - 30 days``, once a minute. With an index on state
alone that walks every finished job ever kept, so it grows with the database's age; (state, ended_at)
reads only the window. Lookups by state alone use the same index (its first column).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_jobs_state", "jobs")
    op.create_index("ix_jobs_state_ended", "jobs", ["state", "ended_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_state_ended", "jobs")
    op.create_index("ix_jobs_state", "jobs", ["state"])
