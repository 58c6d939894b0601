"""The teams' evidence kept in memory and read incrementally (control/estimates.py, Evidence) gives the
factors and runs a full read gives (a restarted loop's), through randomized sequences of ends: ends
written late with an earlier time, jobs ended before their launch is closed, requeued jobs cancelled
while pending, GPU sizes, jobs leaving the 30-day window, and two loops reading at their own times.
SQLite and PostgreSQL."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from overcast.control.estimates import FULL_READ_S, LATE_S, Evidence
from overcast.scheduler.estimates import PROVISIONING_HOURS, WINDOW_DAYS
from overcast.store import JobState, LaunchTerms, Store
from overcast.store.estimates import Run
from tests.control.estimates_harness import DAY, Clock, H, past
from tests.control.harness import job

__all__ = ["past"]  # the fixture

STEPS = 160
SIZES = [(1, 1), (1, 8), (8, 8), (2, 0)]  # (nodes, GPUs per node)


class Ends:
    """Finishes random jobs through the real store, as the control loop's paths write them."""

    def __init__(
        self, store: Store, clock: Clock, rng: random.Random, late: Callable[[], object] = lambda: None
    ) -> None:
        self.store, self.clock, self.rng = store, clock, rng
        self.late = late  # sometimes called between a job's end time and its writing: a loop's read
        self.open: list[tuple[str, int, float]] = []  # ended jobs' launches still open: (job, attempt, end)

    def finish(self) -> None:
        rng, store, clock = self.rng, self.store, self.clock
        team = rng.choice(["honest", "under", "mixed"])
        worked = rng.uniform(0.1, 6.0)
        ratio = {"honest": rng.uniform(0.7, 1.5), "under": rng.uniform(3, 20)}.get(team, rng.uniform(0.5, 8))
        spec = job("j", "true", expected_hours=worked / ratio, checkpoint_dir=rng.choice([None, "/ckpt"]))
        job_id = store.submit(team, spec).id
        attempts = rng.choice([1, 1, 2])
        for n in range(1, attempts + 1):
            nodes, gpus = rng.choice(SIZES)
            assert store.transition(job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=n, pool_id="p")
            terms = LaunchTerms("local", "on-demand", nodes, gpus, "H100", 2.0)
            store.record_launch(job_id, n, "p", "local", "h", team=team, terms=terms)
            assert store.transition(job_id, [JobState.LAUNCHING], JobState.RUNNING)
            clock.now += (worked / attempts + PROVISIONING_HOURS) * H
            if n < attempts:
                store.end_launch(job_id, n, "preempted")
                assert store.transition(job_id, [JobState.RUNNING], JobState.PENDING)
        end = rng.choice([JobState.SUCCEEDED] * 4 + [JobState.FAILED, JobState.CANCELLED, JobState.PENDING])
        # a backend event handled late: its time, up to most of LATE_S (and of the attempt) earlier
        at = clock.now - rng.uniform(0.0, 0.9) * min(LATE_S, worked / attempts * H)
        if rng.random() < 0.3:
            self.late()
        if end is JobState.PENDING:  # requeued, then cancelled while pending
            store.end_launch(job_id, attempts, "stopped", at=at)
            assert store.transition(job_id, [JobState.RUNNING], JobState.PENDING)
            assert store.request_cancel(job_id) is not None
        elif rng.random() < 0.5:  # the launch closed first; the job's end is its launch's
            store.end_launch(job_id, attempts, end.value, at=at)
            assert store.transition(job_id, [JobState.RUNNING], end)
        else:  # the job's end first (an event), its launch closed at once or some reads later
            assert store.transition(job_id, [JobState.RUNNING], end, event_at=at)
            self.open.append((job_id, attempts, at))
            if rng.random() < 0.5:
                self.close()

    def close(self) -> None:
        job_id, attempt, at = self.open.pop(self.rng.randrange(len(self.open)))
        self.store.end_launch(job_id, attempt, "succeeded", at=at)

    def wait(self) -> None:
        self.clock.now += self.rng.choice([60.0, 600.0, 2 * H, 20 * H, 6 * DAY, 13 * DAY])


def agrees(evidence: Evidence, store: Store, now: float) -> bool:
    """``evidence``'s factors and runs are a full read's (a restarted loop's) at ``now``."""
    factors = evidence.factors(store, now)
    assert factors == Evidence().factors(store, now)
    full = store.finished_runs(now, days=WINDOW_DAYS, allowance_h=PROVISIONING_HOURS)
    assert _sorted(evidence.runs()) == _sorted(full)
    return bool(factors)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_reads_give_a_full_reads_factors(past, seed: int) -> None:
    store, clock = past
    rng = random.Random(seed)
    loops = [Evidence(full_every=math.inf), Evidence(full_every=math.inf)]  # only the first read full
    ends = Ends(store, clock, rng, lambda: agrees(rng.choice(loops), store, clock.now))
    factored = 0
    for _ in range(STEPS):
        roll = rng.random()
        if roll < 0.5:
            ends.finish()
        elif roll < 0.6 and ends.open:
            ends.close()
        elif roll < 0.75:
            ends.wait()
        else:
            factored += agrees(rng.choice(loops), store, clock.now)
    for evidence in loops:
        factored += agrees(evidence, store, clock.now)
    assert factored  # some reads gave a team a factor


def test_reads_after_the_first_take_only_what_ended_since(past) -> None:
    store, clock = past
    ends = Ends(store, clock, random.Random(4))
    for _ in range(30):
        ends.finish()
    while ends.open:
        ends.close()
    rows: list[int] = []
    read = store.finished_jobs

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        found = read(*args, **kwargs)
        rows.append(len(found))
        return found

    store.finished_jobs = counted  # type: ignore[method-assign]
    evidence = Evidence(full_every=math.inf)
    for _ in range(3):
        evidence.factors(store, clock.now)
        clock.now += 2 * LATE_S  # the second read takes again what ended within LATE_S of the first
    ends.finish()
    while ends.open:
        ends.close()
    evidence.factors(store, clock.now)
    assert rows[0] == 30 and rows[2:] == [0, 1]


def test_a_launch_end_corrected_long_after_its_job_ended_is_seen_by_the_next_full_read(past) -> None:
    """The limit of the incremental reads: no end time tells of it, so it waits for a full read."""
    store, clock = past
    job_id = store.submit("late", job("j", "true", expected_hours=1.0)).id
    assert store.transition(job_id, [JobState.PENDING], JobState.LAUNCHING, attempt=1, pool_id="p")
    terms = LaunchTerms("local", "spot", 1, 1, "H100", 1.0)
    store.record_launch(job_id, 1, "p", "local", "h", team="late", terms=terms)
    assert store.transition(job_id, [JobState.LAUNCHING], JobState.RUNNING)
    clock.now += 10 * H
    store.end_launch(job_id, 1, "succeeded")
    assert store.transition(job_id, [JobState.RUNNING], JobState.SUCCEEDED)
    ended = clock.now
    clock.now += LATE_S + 600.0
    evidence = Evidence()
    evidence.factors(store, clock.now)  # full
    store.end_launch(job_id, 1, "succeeded", at=ended - 5 * H)  # a late event: it ran 5 h
    evidence.factors(store, clock.now + 60.0)  # incremental: the job ended too long before
    assert evidence.runs()["late"] == pytest.approx([(9.75, 9.75)])
    evidence.factors(store, clock.now + FULL_READ_S)
    assert evidence.runs()["late"] == pytest.approx([(4.75, 4.75)])


def _sorted(runs: dict[str, list[Run]]) -> dict[str, list[Run]]:
    return {team: sorted(values) for team, values in runs.items()}


class _FailingOnce:
    """A store whose next finished_jobs() raises once (a database error), then answers its rows."""

    def __init__(self, rows: list) -> None:
        self.rows, self.fail = rows, False

    def finished_jobs(self, now: float, **kwargs: object) -> list:
        if self.fail:
            self.fail = False
            raise OSError("database is locked")
        return list(self.rows)


def test_a_failed_full_read_loses_no_team_whose_factor_must_then_go() -> None:
    from overcast.control.estimates import FULL_READ_S, Evidence
    from overcast.store.estimates import Finished, Run

    store = _FailingOnce([Finished(f"j{i}", "under", 100.0, Run(10.0, 5.0), False) for i in range(5)])
    evidence = Evidence()
    assert evidence.factors(store, 1000.0) == {"under": 10.0}  # type: ignore[arg-type]
    store.fail = True
    with pytest.raises(OSError):
        evidence.factors(store, 1000.0 + FULL_READ_S)  # type: ignore[arg-type]
    store.rows = []  # the team's jobs left the window meanwhile
    assert evidence.factors(store, 1000.0 + FULL_READ_S + 60) == {}  # type: ignore[arg-type]
