"""Persistent state: SQLAlchemy Core + Alembic; SQLite by default, PostgreSQL for production."""

from overcast.store.budgets import BudgetStatus, month_start
from overcast.store.engine import StoreConfigError, StoreUnavailable, default_url, overcast_home
from overcast.store.records import (
    EventRecord,
    JobRecord,
    LaunchRecord,
    LaunchTerms,
    OpenLaunch,
    PoolHealthRecord,
    ServiceRecord,
)
from overcast.store.states import ACTIVE_STATES, TERMINAL_STATES, JobState
from overcast.store.store import TEAM_NAME_PATTERN, Store, check_team_name, new_job_id
from overcast.store.usage import USAGE_BY, UsageBy, UsageRecord, UsageReport

__all__ = [
    "ACTIVE_STATES",
    "TEAM_NAME_PATTERN",
    "TERMINAL_STATES",
    "USAGE_BY",
    "BudgetStatus",
    "EventRecord",
    "JobRecord",
    "JobState",
    "LaunchRecord",
    "LaunchTerms",
    "OpenLaunch",
    "PoolHealthRecord",
    "ServiceRecord",
    "Store",
    "StoreConfigError",
    "StoreUnavailable",
    "UsageBy",
    "UsageRecord",
    "UsageReport",
    "check_team_name",
    "default_url",
    "month_start",
    "new_job_id",
    "overcast_home",
]
