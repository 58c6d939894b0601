"""Usage accounting from launch records, end times from events, and migration 0004, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import insert, inspect, select, update

from overcast.store import JobState, LaunchTerms, Store, migrate
from overcast.store.engine import make_engine
from overcast.store.tables import jobs, launches
from tests.store.test_jobs import FakeClock, make_spec

H = 3600.0
ON_DEMAND = LaunchTerms("oci", "on-demand", 2, 8, "H100", 30.0)  # 16 GPUs, $60 an hour
SPOT = LaunchTerms("azure", "spot", 1, 8, "H100", 10.0)  # 8 GPUs, $10 an hour
RESERVED = LaunchTerms("oci", "reserved", 1, 4, "A100", 12.0)  # 4 GPUs, $12 an hour, already paid


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


@pytest.fixture
def store(store_url: str, clock: FakeClock) -> Iterator[Store]:
    s = Store(store_url, clock=clock)
    yield s
    s.close()


def launch(store: Store, clock: FakeClock, job_id: str, attempt: int, terms: LaunchTerms, *, team: str,
           start: float, end: float | None, pool: str = "") -> None:  # fmt: skip
    clock.now = start
    pool = pool or f"{terms.provider}/r1/{terms.purchase}"
    store.record_launch(job_id, attempt, pool, "local", "h", team=team, terms=terms)
    if end is not None:
        clock.now = end
        store.end_launch(job_id, attempt, "succeeded")


def test_a_window_counts_only_the_overlap_and_running_launches_up_to_now(
    store: Store, clock: FakeClock
) -> None:
    launch(store, clock, "j-a", 1, ON_DEMAND, team="ml", start=0, end=4 * H)  # half inside [2h, 6h)
    launch(store, clock, "j-b", 1, SPOT, team="ml", start=5 * H, end=None)  # still running
    launch(store, clock, "j-c", 1, ON_DEMAND, team="ml", start=7 * H, end=8 * H)  # after the window
    clock.now = 5.5 * H
    report = store.usage(2 * H, 6 * H)
    [ml] = report.rows
    assert ml.key == "ml" and ml.launches == 2
    assert ml.gpu_hours == pytest.approx(2 * 16 + 0.5 * 8)  # j-b counts up to now, not to until
    assert ml.node_hours == pytest.approx(2 * 2 + 0.5 * 1)
    assert ml.dollars == pytest.approx(2 * 60 + 0.5 * 10)
    assert (ml.reserved_gpu_hours, ml.reserved_dollars, ml.unpriced_launches) == (0.0, 0.0, 0)
    assert report.total == replace(ml, key=None)
    assert store.usage(8 * H, 9 * H).rows == []  # [since, until): j-c ended as the window began
    assert store.usage(0, 5 * H).total.launches == 1  # ... and j-b began as this one ended


def test_a_preempted_jobs_attempts_are_both_counted(store: Store, clock: FakeClock) -> None:
    job = store.submit("ml", make_spec())
    launch(store, clock, job.id, 1, SPOT, team="ml", start=0, end=None)
    clock.now = 1 * H
    store.end_launch(job.id, 1, "preempted")
    launch(store, clock, job.id, 2, ON_DEMAND, team="ml", start=1.5 * H, end=3.5 * H)
    clock.now = 10 * H
    [row] = store.usage(0, 10 * H, by="job").rows
    assert (row.key, row.launches) == (job.id, 2)
    assert row.gpu_hours == pytest.approx(1 * 8 + 2 * 16)
    assert row.dollars == pytest.approx(10 + 2 * 60)
    providers = {r.key: r.gpu_hours for r in store.usage(0, 10 * H, by="provider").rows}
    assert providers == pytest.approx({"azure": 8.0, "oci": 32.0})


def test_reserved_use_is_marked_apart_from_list_price_spend(store: Store, clock: FakeClock) -> None:
    launch(store, clock, "j-r", 1, RESERVED, team="vision", start=0, end=2 * H, pool="oci/r1/res")
    launch(store, clock, "j-o", 1, ON_DEMAND, team="vision", start=0, end=1 * H, pool="oci/r1/od")
    launch(store, clock, "j-m", 1, SPOT, team="ml", start=0, end=1 * H)
    clock.now = 3 * H
    teams = {r.key: r for r in store.usage(0, 3 * H).rows}
    vision = teams["vision"]
    assert vision.gpu_hours == pytest.approx(2 * 4 + 16)  # all GPU-hours, reserved included
    assert vision.reserved_gpu_hours == pytest.approx(8.0)
    assert vision.dollars == pytest.approx(60.0)  # spend: the on-demand hour only
    assert vision.reserved_dollars == pytest.approx(24.0)  # reserved use at its recorded price
    assert [r.key for r in store.usage(0, 3 * H).rows] == ["vision", "ml"]  # most dollars first
    pools = {r.key: r for r in store.usage(0, 3 * H, by="pool", team="vision").rows}
    assert set(pools) == {"oci/r1/res", "oci/r1/od"}  # a team's view holds only its own launches
    assert pools["oci/r1/res"].dollars == 0.0 and pools["oci/r1/res"].reserved_dollars == pytest.approx(24.0)


def test_bad_windows_and_groupings_are_value_errors(store: Store) -> None:
    with pytest.raises(ValueError, match="must be before"):
        store.usage(10.0, 10.0)
    with pytest.raises(ValueError, match="unknown grouping 'zone'"):
        store.usage(0.0, 10.0, by="zone")


def test_launch_ends_take_the_event_time_clamped_and_only_move_earlier(
    store: Store, clock: FakeClock
) -> None:
    launch(store, clock, "j-a", 1, SPOT, team="ml", start=100.0, end=None)
    launch(store, clock, "j-b", 1, SPOT, team="ml", start=100.0, end=None)
    clock.now = 500.0
    store.end_launch("j-a", 1, "succeeded", at=50.0)  # before the launch (another host's clock)
    store.end_launch("j-b", 1, "succeeded", at=900.0)  # in the future
    ends = lambda: {r.job_id: (r.ended_at, r.outcome) for r in _rows(store)}  # noqa: E731
    assert ends() == {"j-a": (100.0, "succeeded"), "j-b": (500.0, "succeeded")}
    clock.now = 800.0
    store.end_launch("j-b", 1, "lost")  # a later duplicate does not stretch it
    store.end_launch("j-b", 1, "failed", at=300.0)  # an event's earlier time corrects it
    assert ends()["j-b"] == (300.0, "failed")


def test_only_a_lost_end_moves_later_and_only_when_the_attempt_was_seen_running(
    store: Store, clock: FakeClock
) -> None:
    launch(store, clock, "j-a", 1, SPOT, team="ml", start=100.0, end=None)
    launch(store, clock, "j-b", 1, SPOT, team="ml", start=100.0, end=200.0)  # a normal end
    clock.now = 150.0
    store.end_launch("j-a", 1, "lost")  # one listing missed it
    clock.now = 900.0
    store.end_launch("j-a", 1, "stale")  # not evidence that it ran: the guess stands
    ends = lambda: {r.job_id: (r.ended_at, r.outcome) for r in _rows(store)}  # noqa: E731
    assert ends() == {"j-a": (150.0, "lost"), "j-b": (200.0, "succeeded")}
    store.end_launch("j-a", 1, "orphan", seen_running=True)  # found still running and stopped now
    store.end_launch("j-b", 1, "orphan", seen_running=True)  # a late duplicate: no stretch
    assert ends() == {"j-a": (900.0, "orphan"), "j-b": (200.0, "succeeded")}
    clock.now = 1000.0
    store.end_launch("j-a", 1, "orphan", seen_running=True)  # once moved, it is a real end
    assert ends()["j-a"] == (900.0, "orphan")
    assert store.usage(0, 2000.0).total.gpu_hours == pytest.approx((800.0 + 100.0) * 8 / H)


def test_pages_come_in_a_stable_order_and_the_total_covers_every_row(store: Store, clock: FakeClock) -> None:
    for i, terms in enumerate((SPOT, ON_DEMAND, RESERVED, SPOT, ON_DEMAND)):
        launch(store, clock, f"j-{i}", 1, terms, team="ml", start=0, end=H)
    launch(store, clock, "j-5", 1, SPOT, team="", start=0, end=H)
    with store.engine.begin() as conn:  # a launch from before 0004: no team
        conn.execute(update(launches).where(launches.c.job_id == "j-5").values(team=None))
    clock.now = 2 * H
    whole = store.usage(0, 2 * H, by="job")
    # $60 on-demand, $12 reserved (worth, not spend), $10 spot; equal worth and GPU-hours: by key
    assert [r.key for r in whole.rows] == ["j-1", "j-4", "j-2", "j-0", "j-3", "j-5"]
    assert whole.next_offset is None and whole.total.launches == 6
    pages, offset = [], 0
    while offset is not None:
        page = store.usage(0, 2 * H, by="job", limit=4, offset=offset)
        assert (page.offset, page.total) == (offset, whole.total)  # each page's total is the whole
        pages.append([r.key for r in page.rows])
        offset = page.next_offset
    assert pages == [["j-1", "j-4", "j-2", "j-0"], ["j-3", "j-5"]]
    assert store.usage(0, 2 * H, by="job", limit=6).next_offset is None  # exactly one page: no next
    assert store.usage(0, 2 * H, by="job", limit=1, offset=9).rows == []
    launch(store, clock, "j-6", 1, SPOT, team="a", start=0, end=H)  # worth what the unknown team's is
    clock.now = 2 * H
    teams = store.usage(0, 2 * H, by="team", limit=2)
    assert ([r.key for r in teams.rows], teams.next_offset) == (["ml", None], 2)  # NULL first on both
    assert [r.key for r in store.usage(0, 2 * H, by="team", offset=2).rows] == ["a"]
    with pytest.raises(ValueError, match="bad page"):
        store.usage(0, H, limit=0)
    with pytest.raises(ValueError, match="bad page"):
        store.usage(0, H, offset=-1)


def test_job_end_times_come_from_the_event_not_the_store_clock(store: Store, clock: FakeClock) -> None:
    ok, failed, given_up = (store.submit("ml", make_spec(n)) for n in ("ok", "failed", "given-up"))
    for job in (ok, failed, given_up):
        store.transition(job.id, [JobState.PENDING], JobState.LAUNCHING, attempt=1)
        launch(store, clock, job.id, 1, SPOT, team="ml", start=10.0, end=None)
        clock.now = 20.0
        store.transition(job.id, [JobState.LAUNCHING], JobState.RUNNING, event_at=15.0)
    clock.now = 1000.0  # the loop was away; the nodes ended at 100
    done = store.transition(ok.id, [JobState.RUNNING], JobState.SUCCEEDED, event_at=100.0, event=("x", ""))
    assert (done.started_at, done.ended_at) == (15.0, 100.0)
    assert store.events(job_id=ok.id)[-1].at == 100.0
    early = store.transition(ok.id, [JobState.SUCCEEDED], JobState.SUCCEEDED, event_at=1.0)
    assert early.ended_at == 15.0  # never before it started
    store.end_launch(failed.id, 1, "failed", at=100.0)  # events.py: the launch first, then the retry logic
    assert store.transition(failed.id, [JobState.RUNNING], JobState.FAILED).ended_at == 100.0
    store.end_launch(given_up.id, 1, "preempted", at=100.0)
    store.transition(given_up.id, [JobState.RUNNING], JobState.PENDING)
    clock.now = 2000.0  # waited in the queue, then given up: it ended now, not when its launch did
    assert store.transition(given_up.id, [JobState.PENDING], JobState.FAILED).ended_at == 2000.0


def test_upgrade_from_0003_keeps_launches_and_fills_their_team(store_url: str) -> None:
    engine = make_engine(store_url)
    migrate.upgrade(engine, "0003")
    spec = make_spec().model_dump_json()
    job = {"id": "j-old", "team": "ml", "name": "old", "spec": spec, "state": "running", "priority": 0,
           "attempt": 1, "nodes": 2, "restarts": 0, "failures": 0, "submitted_at": 0.0, "updated_at": 0.0,
           "cancel_requested": False}  # fmt: skip
    old = {"job_id": "j-old", "attempt": 1, "pool_id": "oci/r1/od", "backend": "local", "handle": "h",
           "launched_at": 0.0, "ended": True, "ended_at": H, "outcome": "succeeded"}  # fmt: skip
    with engine.begin() as conn:  # only the columns revision 0003 has
        conn.execute(insert(jobs).values(job))
        conn.execute(insert(launches).values(old))
    engine.dispose()
    store = Store(store_url, clock=FakeClock(2 * H))  # migrates to head
    try:
        [row] = _rows(store)
        assert {k: row[k] for k in old} == old
        assert (row.team, row.nodes, row.provider, row.price_per_node_hour) == ("ml", 2, None, None)
        assert "ix_launches_team_launched" in {
            ix["name"] for ix in inspect(store.engine).get_indexes("launches")
        }
        [ml] = store.usage(0.0, 2 * H).rows
        assert (ml.key, ml.launches, ml.unpriced_launches) == ("ml", 1, 1)
        assert (ml.node_hours, ml.gpu_hours, ml.dollars) == (2.0, 0.0, 0.0)  # no recorded GPUs or price
    finally:
        store.close()


def _rows(store: Store) -> list:
    with store.engine.connect() as conn:
        return [r._mapping for r in conn.execute(select(launches).order_by(launches.c.job_id))]
