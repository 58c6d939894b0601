"""Managed jobs through the real loop: provider loss and preemption resume from the checkpoint with the
same result; capacity errors fail over with a visible cooldown."""

from __future__ import annotations

from pathlib import Path

from overcast.api import metrics
from overcast.control.health import Backoff
from overcast.store import JobState, Store
from tests.control.harness import (
    job,
    make_loop,
    reference_result,
    result_lines,
    run_until,
    state,
    train_command,
)


def test_provider_down_resumes_on_the_other_provider_with_the_same_result(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("train", train_command(), nodes=2))
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    assert state(store, record.id).pool_id == "local/azure-local"  # the cheaper provider
    loop.backends["local:azure-local"].set_down(True)
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.pool_id, final.restarts) == (JobState.SUCCEEDED, "local/oci-local", 1)
    results = result_lines(tmp_path, record.id)
    assert results == [reference_result(tmp_path / "ref")] * 2  # both ranks, identical to uninterrupted
    kinds = [e.kind for e in store.events(job_id=record.id)]
    assert kinds.index("provider-down") < kinds.index("requeued") < kinds.index("succeeded")
    logs = (tmp_path / "logs" / record.id / str(final.attempt) / "node-0.log").read_text()
    assert "resumed from checkpoint" in logs


def _metric(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def test_capacity_error_fails_over_and_puts_the_pool_on_cooldown(tmp_path: Path) -> None:
    before = _metric("overcast_failovers_total", reason="capacity-error")
    placed_before = _metric("overcast_placements_total", provider="oci-local")
    decisions_before = _metric("overcast_decision_seconds_count")
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    loop.backends["local:azure-local"].set_capacity_error(True)
    first = store.submit("default", job("a", "true"))
    run_until(loop, lambda: state(store, first.id).state is JobState.SUCCEEDED)
    assert state(store, first.id).pool_id == "local/oci-local"
    health = store.pool_health()["local/azure-local"]
    assert (health.health, health.failures) == ("out-of-capacity", 1)
    assert 50 < health.until - loop.rt.clock() <= 60  # the first cooldown is the base (60 s here)
    kinds = [e.kind for e in store.events(job_id=first.id)]
    assert kinds.count("capacity-error") == 1 and kinds[-1] == "succeeded"
    # /metrics counts what happened: one failover, one placement on oci-local, timed decide() steps
    assert _metric("overcast_failovers_total", reason="capacity-error") == before + 1
    assert _metric("overcast_placements_total", provider="oci-local") == placed_before + 1
    assert _metric("overcast_decision_seconds_count") > decisions_before
    # While it cools down, new work goes straight to the next best pool: no second refusal.
    second = store.submit("default", job("b", "true"))
    run_until(loop, lambda: state(store, second.id).state is JobState.SUCCEEDED)
    assert state(store, second.id).pool_id == "local/oci-local"
    assert "capacity-error" not in [e.kind for e in store.events(job_id=second.id)]


def test_preempted_node_resumes_from_checkpoint_with_identical_result(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    record = store.submit("default", job("train", train_command(), nodes=2))
    ckpt = tmp_path / "checkpoints" / record.id / "checkpoint.npz"
    run_until(loop, lambda: state(store, record.id).state is JobState.RUNNING and ckpt.exists())
    loop.backends["local:azure-local"].preempt(record.id, rank=1, notice_seconds=1.0)
    run_until(loop, lambda: state(store, record.id).state.terminal)
    final = state(store, record.id)
    assert (final.state, final.restarts, final.attempt) == (JobState.SUCCEEDED, 1, 2)
    assert result_lines(tmp_path, record.id) == [reference_result(tmp_path / "ref")] * 2
    assert "preempted" in [e.kind for e in store.events(job_id=record.id)]


def test_one_refusal_is_one_failure_even_with_several_jobs_placed_on_the_pool(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    loop.backends["local:azure-local"].set_capacity_error(True)
    ids = [store.submit("default", job(name, "true")).id for name in ("a", "b")]
    loop.tick()  # both are placed on azure-local, the cheaper pool; the first launch is refused
    assert store.pool_health()["local/azure-local"].failures == 1  # not 2: the cooldown is not doubled
    run_until(loop, lambda: all(state(store, i).state is JobState.SUCCEEDED for i in ids))
    assert {state(store, i).pool_id for i in ids} == {"local/oci-local"}


def test_backoff_doubles_up_to_its_cap_even_after_thousands_of_failures() -> None:
    backoff = Backoff(base_seconds=30.0, cap_seconds=600.0)
    assert [backoff.cooldown(n) for n in (1, 2, 3, 5, 6)] == [30.0, 60.0, 120.0, 480.0, 600.0]
    assert backoff.cooldown(5000) == 600.0  # a week sold out: 2**4999 seconds would overflow a float


def test_pools_to_avoid_are_forgotten_once_the_job_no_longer_waits(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    loop = make_loop(tmp_path, store)
    for backend in loop.backends.values():
        backend.set_capacity_error(True)
    record = store.submit("default", job("refused", "true"))
    run_until(loop, lambda: len(loop.rt.avoid.get(record.id, ())) == 2)  # refused by both pools
    store.request_cancel(record.id)
    loop.tick()
    assert loop.rt.avoid == {}
