"""Prometheus metrics. The control loop updates these objects; ``GET /metrics`` exposes them.

    from overcast.api import metrics
    metrics.PLACEMENTS.labels(provider="oci").inc()
    with metrics.DECISION_SECONDS.time(): decisions = decide(snapshot)

Jobs by state are not a gauge someone must keep in sync: they are counted in the store at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from overcast.store import JobState, Store

REGISTRY = CollectorRegistry()

# No team label: /metrics needs no token (Prometheus scrapes it), so it must not list the teams.
SUBMISSIONS = Counter("overcast_submissions", "Jobs submitted through the API.", registry=REGISTRY)
PLACEMENTS = Counter(
    "overcast_placements", "Jobs (attempts) placed on a pool.", ["provider"], registry=REGISTRY
)
FAILOVERS = Counter(
    "overcast_failovers",
    "Jobs requeued to run elsewhere after preemption, a capacity error or a provider loss.",
    ["reason"],
    registry=REGISTRY,
)
DECISION_SECONDS = Histogram(
    "overcast_decision_seconds",
    "Wall time of one scheduler decide() step.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    registry=REGISTRY,
)


class JobsByState(Collector):
    """``overcast_jobs{state=...}``, read from the store on each scrape (every state, zeros included)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.count_by_state()
        family = GaugeMetricFamily("overcast_jobs", "Jobs in the store by state.", labels=["state"])
        for state in JobState:
            family.add_metric([state.value], counts.get(state, 0))
        yield family


def render(store: Store) -> bytes:
    """The text exposition of the shared metrics plus this store's job counts."""
    per_store = CollectorRegistry()
    per_store.register(JobsByState(store))
    return generate_latest(REGISTRY) + generate_latest(per_store)
