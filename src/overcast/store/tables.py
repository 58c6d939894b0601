"""Table definitions (SQLAlchemy Core). The schema itself is created by the Alembic migrations.

Core tables rather than ORM classes: the store returns plain records and runs one statement per
step, so there is no identity map to keep in sync and the submit path stays short.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

teams = Table(
    "teams",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("monthly_budget", Float),  # list-price dollars per UTC calendar month; NULL: none (0005)
)

# A token is "oc_<token_id>_<secret>": the id finds the row, the secret is only stored as
# sha256(salt + secret), so a leaked database does not leak usable tokens.
tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("team", String(64), ForeignKey("teams.name"), nullable=False, index=True),
    Column("salt", String(64), nullable=False),
    Column("secret_hash", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)

jobs = Table(
    "jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("team", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("spec", Text, nullable=False),  # JobSpec as JSON
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("attempt", Integer, nullable=False, default=0),
    Column("pool_id", String(256)),
    Column("backend", String(128)),
    Column("nodes", Integer),
    Column("restarts", Integer, nullable=False, default=0),
    Column("failures", Integer, nullable=False, default=0),
    Column("submitted_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("started_at", Float),
    Column("ended_at", Float),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("reason", Text),
    Index("ix_jobs_state_ended", "state", "ended_at"),  # by state; finished within a window
    Index("ix_jobs_team_submitted", "team", "submitted_at"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job_id", String(32)),
    Column("team", String(64)),  # copied from the job so a team's timeline needs no join
    Column("at", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    # a team's or a job's timeline, paged by id (GET /v1/events?after=)
    Index("ix_events_team_id", "team", "id"),
    Index("ix_events_job_id_id", "job_id", "id"),
)

launches = Table(
    "launches",
    metadata,
    Column("job_id", String(32), primary_key=True),
    Column("attempt", Integer, primary_key=True),
    Column("pool_id", String(256), nullable=False),
    Column("backend", String(128), nullable=False),
    Column("handle", Text, nullable=False),
    Column("launched_at", Float, nullable=False),
    Column("ended", Boolean, nullable=False, default=False),
    Column("ended_at", Float),
    Column("outcome", String(64)),
    # Billing terms, frozen at launch (migration 0004; NULL on rows recorded before it, but team).
    # launched_at..ended_at is the attempt's billed time; ended_at is the backend's event time when known.
    Column("team", String(64)),
    Column("provider", String(64)),
    Column("purchase", String(16)),
    Column("nodes", Integer),
    Column("gpus_per_node", Integer),
    Column("accelerator", String(64)),
    Column("price_per_node_hour", Float),
    Index("ix_launches_ended", "ended"),
    Index("ix_launches_team_launched", "team", "launched_at"),  # a team's usage over a window
)

pool_health = Table(
    "pool_health",
    metadata,
    Column("pool_id", String(256), primary_key=True),
    Column("health", String(32), nullable=False),
    Column("until", Float),
    Column("failures", Integer, nullable=False, default=0),
    Column("detail", Text, nullable=False, default=""),
    Column("updated_at", Float, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("expires_at", Float, nullable=False),
)

# An inference service (overcast.serve): the spec the API accepted, and what its controller reports.
# Names are unique within a team; the id names its replicas' launches and its controller's ledger.
services = Table(
    "services",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("team", String(64), nullable=False),
    Column("name", String(64), nullable=False),
    Column("spec", Text, nullable=False),  # ServiceSpec as JSON
    Column("version", Integer, nullable=False),  # +1 for every accepted change of the spec
    Column("state", String(16), nullable=False),  # "active" | "deleting" (the row goes once stopped)
    Column("lb_port", Integer),  # the load balancer's port, kept across server restarts
    Column("status", Text, nullable=False, default="{}"),  # JSON, written by the service's controller
    Column("submitted_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    UniqueConstraint("team", "name", name="uq_services_team_name"),
)
