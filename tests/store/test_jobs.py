"""Store basics on SQLite and PostgreSQL: jobs, CAS transitions, events, launches, pool health."""

from __future__ import annotations

import pytest

from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from overcast.store import JobState, LaunchTerms, Store


def make_spec(name: str = "train", *, priority: int = 0, gpus: int = 8) -> JobSpec:
    res = Resources(accelerators=(AcceleratorRequest(name="H100", count=gpus),))
    return JobSpec(name=name, resources=res, num_nodes=2, priority=priority, env={"A": "1"})


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(store_url: str) -> Store:
    s = Store(store_url, clock=FakeClock())
    yield s
    s.close()


def test_submit_get_round_trips_the_spec(store: Store) -> None:
    job = store.submit("ml", make_spec(priority=5))
    assert job.id.startswith("j-") and len(job.id) == 12
    assert (job.state, job.team, job.priority, job.attempt) == (JobState.PENDING, "ml", 5, 0)
    got = store.get(job.id)
    assert got == job
    assert got.spec.team == "ml"  # the owning team wins over the spec's default
    assert got.spec.resources.accelerators[0].count == 8


def test_get_hides_other_teams_jobs(store: Store) -> None:
    job = store.submit("ml", make_spec())
    assert store.get(job.id, team="ml") is not None
    assert store.get(job.id, team="other") is None
    assert store.get("j-missing000") is None


def test_list_filters_by_team_and_state_in_submit_order(store: Store) -> None:
    ids = []
    for i in range(5):
        store.clock.now += 1
        ids.append(store.submit("a" if i % 2 == 0 else "b", make_spec(f"j{i}")).id)
    assert [j.id for j in store.list()] == ids
    assert [j.id for j in store.list(team="a")] == ids[0::2]
    store.transition(ids[0], [JobState.PENDING], JobState.LAUNCHING)
    assert [j.id for j in store.list(states=[JobState.PENDING], team="a")] == ids[2::2]
    assert [j.id for j in store.list(limit=2, offset=1)] == ids[1:3]
    assert store.count_by_state() == {JobState.PENDING: 4, JobState.LAUNCHING: 1}


def test_transition_is_compare_and_set(store: Store) -> None:
    job = store.submit("ml", make_spec())
    store.clock.now = 2000.0
    launched = store.transition(
        job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id="p1", nodes=2
    )
    assert launched is not None and launched.state is JobState.LAUNCHING
    assert (launched.attempt, launched.pool_id, launched.nodes, launched.updated_at) == (1, "p1", 2, 2000.0)
    assert store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=2) is None
    assert store.get(job.id).attempt == 1
    running = store.transition(job.id, [JobState.LAUNCHING], JobState.RUNNING)
    assert running.started_at == 2000.0 and running.ended_at is None
    store.clock.now = 2500.0
    done = store.transition(job.id, [JobState.RUNNING], JobState.SUCCEEDED, reason="exit 0")
    assert (done.ended_at, done.reason) == (2500.0, "exit 0")
    assert store.transition("j-missing000", [JobState.PENDING], JobState.LAUNCHING) is None


def test_transition_writes_its_event_in_the_same_transaction_or_not_at_all(store: Store) -> None:
    job = store.submit("ml", make_spec())
    before = [e.kind for e in store.events(job_id=job.id)]
    placed = store.transition(
        job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, event=("placed", "attempt 1 on p1")
    )
    assert placed is not None
    lost = store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, event=("placed", "stale loop"))
    assert lost is None  # the compare-and-set failed: no event either
    store.transition(job.id, [JobState.LAUNCHING], JobState.RUNNING, event=("started", "s"), event_at=1234.0)
    got = store.events(job_id=job.id)[len(before) :]
    assert [(e.kind, e.detail) for e in got] == [("placed", "attempt 1 on p1"), ("started", "s")]
    assert got[1].at == 1234.0
    assert store.events(team="ml")[-1].kind == "started"  # the event belongs to the job's team


def test_transition_can_require_the_attempt_it_read(store: Store) -> None:
    job = store.submit("ml", make_spec())
    store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1)
    store.transition(job.id, [JobState.LAUNCHING], JobState.PENDING)  # e.g. a capacity error
    # a stale loop read the job at attempt 0 and would launch attempt 1 again: refused
    assert store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt_was=0, attempt=1) is None
    fresh = store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt_was=1, attempt=2)
    assert fresh is not None and fresh.attempt == 2


def test_transition_rejects_unknown_fields(store: Store) -> None:
    job = store.submit("ml", make_spec())
    with pytest.raises(ValueError, match="cannot set \\['team'\\]"):
        store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, team="evil")


def test_cancel_pending_is_immediate_running_is_flagged(store: Store) -> None:
    pending = store.submit("ml", make_spec())
    running = store.submit("ml", make_spec())
    store.transition(running.id, [JobState.PENDING], JobState.RUNNING)
    assert store.request_cancel(pending.id, team="other") is None
    cancelled = store.request_cancel(pending.id, team="ml")
    assert cancelled.state is JobState.CANCELLED and cancelled.cancel_requested
    flagged = store.request_cancel(running.id)
    assert flagged.state is JobState.RUNNING and flagged.cancel_requested
    assert [e.kind for e in store.events(job_id=running.id)] == ["submitted", "cancel-requested"]
    assert [e.kind for e in store.events(job_id=pending.id)] == ["submitted", "cancel-requested", "cancelled"]
    assert [j.id for j in store.list(cancel_requested=True, states=[JobState.RUNNING])] == [running.id]
    assert store.request_cancel(running.id).updated_at == flagged.updated_at  # asking twice changes nothing


def test_events_are_ordered_and_filtered_by_job_and_team(store: Store) -> None:
    a = store.submit("a", make_spec())
    b = store.submit("b", make_spec())
    store.add_event(a.id, "placed", "pool p1", at=5.0)
    store.add_event(None, "provider-down", "oci")
    every = store.events()
    assert [e.kind for e in every] == ["submitted", "submitted", "placed", "provider-down"]
    assert [e.id for e in every] == sorted(e.id for e in every)
    assert [e.kind for e in store.events(job_id=a.id)] == ["submitted", "placed"]
    assert store.events(job_id=a.id)[1].at == 5.0
    assert [e.job_id for e in store.events(team="b")] == [b.id]
    assert [e.kind for e in store.events(after_id=every[1].id, limit=1)] == ["placed"]


def test_launches_record_update_and_end(store: Store) -> None:
    terms = LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0)
    store.record_launch("j-a", 1, "p1", "local", "pid:1", team="ml", terms=terms)
    store.record_launch("j-a", 1, "p1", "local", "pid:2", team="ml", terms=terms)  # updates the handle
    store.record_launch("j-b", 1, "p2", "slurm", "42", team="ml", terms=terms)
    assert [(rec.job_id, rec.handle) for rec in store.launches()] == [("j-a", "pid:2"), ("j-b", "42")]
    store.end_launch("j-a", 1, "succeeded")
    assert [rec.job_id for rec in store.launches()] == ["j-b"]
    ended = [rec for rec in store.launches(active_only=False) if rec.job_id == "j-a"]
    assert ended[0].ended is True
    assert [(r.job_id, r.ended) for r in store.launches(active_only=False, job_id="j-a")] == [("j-a", True)]
    assert store.launches(job_id="j-a") == [] and store.launches(job_id="j-b")[0].handle == "42"


def test_pool_health_upserts(store: Store) -> None:
    assert store.pool_health() == {}
    store.set_pool_health("oci/a", "out-of-capacity", until=1060.0, failures=1, detail="no host capacity")
    store.set_pool_health("oci/a", "out-of-capacity", until=1120.0, failures=2)
    health = store.pool_health()["oci/a"]
    assert (health.health, health.until, health.failures, health.detail) == ("out-of-capacity", 1120.0, 2, "")


def test_submit_many_is_one_batch_in_order(store: Store) -> None:
    jobs = store.submit_many("ml", [make_spec(f"j{i}") for i in range(5)])
    assert [j.name for j in jobs] == [f"j{i}" for i in range(5)]
    assert len({j.id for j in jobs}) == 5
    assert [j.id for j in store.list()] == [j.id for j in jobs]
    assert len(store.events()) == 5
    assert store.submit_many("ml", []) == []


def test_token_ids_are_listed_per_team_and_a_revoked_token_is_refused(store: Store) -> None:
    first = store.create_team("ml")
    store.clock.now += 1
    second = store.create_team("ml")
    other = store.create_team("cv")
    ids = [token_id for token_id, _ in store.team_tokens("ml")]
    assert ids == [first.split("_")[1], second.split("_")[1]]  # oldest first, ids only
    assert store.revoke_token(ids[0]) == "ml" and store.revoke_token(ids[0]) is None
    assert store.team_for_token(first) is None
    assert store.team_for_token(second) == ("ml", False) and store.team_for_token(other) == ("cv", False)
    assert [t for t, _ in store.team_tokens("ml")] == [ids[1]] and store.team_tokens("nobody") == []
