"""Events indexes on (team, id) and (job_id, id): a team's or a job's timeline, paged by id.

``GET /v1/events`` asks for ``team = ? AND id > ? ORDER BY id LIMIT n``. With an index on team
alone PostgreSQL walks the primary key from ``after`` and filters by team, reading every other
team's events on the way; (team, id) reads only the rows it returns. (SQLite's indexes already end
in the rowid, so there this changes nothing.)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_events_team", "events")
    op.drop_index("ix_events_job_id", "events")
    op.create_index("ix_events_team_id", "events", ["team", "id"])
    op.create_index("ix_events_job_id_id", "events", ["job_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_job_id_id", "events")
    op.drop_index("ix_events_team_id", "events")
    op.create_index("ix_events_job_id", "events", ["job_id"])
    op.create_index("ix_events_team", "events", ["team"])
