"""Learned pool health: a pool that answers "out of capacity" (or fails a launch) cools down, with
exponential backoff.

The store keeps (health, until, failures) per pool so every control loop, and ``overcast pools``, sees
the same cooldowns, and a restarted loop does not hammer a pool that just refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from overcast.placement.pool import Health, Pool
from overcast.store import PoolHealthRecord, Store


@dataclass(frozen=True, slots=True)
class Backoff:
    base_seconds: float = 30.0
    cap_seconds: float = 600.0

    def cooldown(self, failures: int, factor: float = 1.0) -> float:
        """Seconds to wait after the ``failures``-th failure in a row: base, 2x base, 4x base... capped;
        ``factor`` scales base and cap (a launch error outlasts a capacity error)."""
        doublings = min(max(0, failures - 1), 40)  # a pool sold out for days must not overflow a float
        return factor * min(self.cap_seconds, self.base_seconds * 2**doublings)


# A launch error that is neither capacity nor an outage (a missing security group, subnet or image, an
# IAM policy) lasts until someone fixes the account: retry the pool 4x less often than a sold-out one.
LAUNCH_ERROR_FACTOR = 4.0


def record_failure(
    store: Store,
    pool_id: str,
    health: Health,
    detail: str,
    now: float,
    backoff: Backoff,
    factor: float = 1.0,
) -> PoolHealthRecord:
    """The pool refused (``detail``: why): it cools down, and the timeline says for how long."""
    previous = store.pool_health().get(pool_id)
    failures = (previous.failures if previous else 0) + 1
    cooldown = backoff.cooldown(failures, factor)
    store.set_pool_health(pool_id, health.value, until=now + cooldown, failures=failures, detail=detail)
    why = f"{pool_id}: {detail}; cooling down {cooldown:.0f}s (failure {failures} in a row)"
    store.add_event(None, "pool-cooldown", why)
    return PoolHealthRecord(health.value, now + cooldown, failures, detail)


def record_success(store: Store, pool_id: str, known: dict[str, PoolHealthRecord]) -> None:
    """A launch worked: forget the pool's failures (written only when there were some)."""
    previous = known.get(pool_id)
    if previous is not None and (previous.failures or previous.health != Health.OK):
        store.set_pool_health(pool_id, Health.OK.value, until=None, failures=0)


def apply_learned(pools: list[Pool], known: dict[str, PoolHealthRecord], now: float) -> None:
    """Overlay learned cooldowns on what backends report; a backend's own DOWN always wins."""
    for pool in pools:
        record = known.get(pool.id)
        if pool.health is Health.DOWN or record is None or record.until is None or record.until <= now:
            continue
        if record.health in (Health.OUT_OF_CAPACITY, Health.DOWN):
            pool.health = Health.OUT_OF_CAPACITY  # usable again at ``until``, whatever the cause
            pool.unhealthy_until = record.until
