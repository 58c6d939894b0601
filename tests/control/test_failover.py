"""Managed jobs through the real loop: provider loss and preemption resume from the checkpoint with the
same result; capacity errors fail over with a visible cooldown."""

from __future__ import annotations

from pathlib import Path

from overcast.store import JobState, Store
from tests.control.harness import job, make_loop, reference_result, result_lines, run_until, state, train_command


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
