"""The twin backend: capacity truth, spot reclaims with checkpoint loss, outages."""

import numpy as np
import pytest

from overcast.backends.base import CapacityError, EventKind, LaunchRequest, ProviderDown
from overcast.placement.pool import Pool, Purchase
from overcast.spec.models import JobSpec
from overcast.twin.backend import TwinBackend
from overcast.twin.clock import VirtualClock


def make(purchase=Purchase.SPOT, nodes=4, checkpoint=600.0):
    clock = VirtualClock()
    pool = Pool(
        id="gcp/us/x/spot",
        provider="gcp",
        region="us",
        zone=None,
        instance_type="x",
        accelerator="H100",
        gpus_per_node=8,
        purchase=purchase,
        price_per_node_hour=36.0,
        capacity_nodes=nodes,
    )
    backend = TwinBackend(
        clock, [(pool, nodes, 60.0)], checkpoint_seconds=checkpoint, restart_overhead_seconds=120.0
    )
    return clock, pool, backend


def launch(backend, pool, job_id, nodes, attempt=1, work=3600.0):
    backend.work[job_id] = work
    return backend.launch(LaunchRequest(job_id, attempt, pool, nodes, JobSpec(name=job_id)))


def test_job_finishes_after_provisioning_plus_work_and_is_billed_for_both():
    clock, pool, backend = make()
    launch(backend, pool, "a", 2, work=3600.0)
    clock.run_until(10_000)
    [event] = backend.poll()
    assert (event.kind, event.at) == (EventKind.SUCCEEDED, 3660.0)
    assert backend.ledger.paid_node_seconds[pool.id] == pytest.approx(2 * 3660.0)
    assert backend.ledger.spent == pytest.approx(2 * 36.0 * 3660.0 / 3600.0)
    assert pool.used_nodes == 0


def test_launch_beyond_capacity_raises_capacity_error():
    _, pool, backend = make(nodes=4)
    launch(backend, pool, "a", 3)
    with pytest.raises(CapacityError):
        launch(backend, pool, "b", 2)


def test_spot_reclaim_preempts_newest_and_loses_work_since_last_checkpoint():
    clock, pool, backend = make(nodes=4, checkpoint=600.0)
    launch(backend, pool, "old", 2, work=7200.0)
    clock.run_until(100.0)
    launch(backend, pool, "new", 2, work=7200.0)
    clock.at(100.0 + 60.0 + 1500.0, backend.set_available, pool.id, 0.5)  # 25 min of work on "new"
    clock.run_until(2000.0)
    [event] = backend.poll()
    assert (event.kind, event.job_id) == (EventKind.PREEMPTED, "new")
    assert backend.work["new"] == pytest.approx(7200.0 - 1200.0)  # two 10-minute checkpoints kept
    assert backend.ledger.lost_gpu_seconds == pytest.approx(300.0 * 2 * 8)
    assert backend.active() == [("old", 1)]


def test_outage_preempts_everything_and_refuses_launches_until_it_ends():
    clock, pool, backend = make(purchase=Purchase.ON_DEMAND)
    launch(backend, pool, "a", 1)
    clock.at(500.0, backend.set_down, "gcp", True)
    clock.run_until(600.0)
    kinds = [e.kind for e in backend.poll()]
    assert kinds == [EventKind.PREEMPTED, EventKind.PROVIDER_DOWN]
    with pytest.raises(ProviderDown):
        launch(backend, pool, "b", 1)
    backend.set_down("gcp", False)
    launch(backend, pool, "b", 1, attempt=2)
    assert backend.active() == [("b", 2)]


def test_usable_capacity_follows_the_spot_share_and_outages():
    clock, pool, backend = make(nodes=4)
    clock.at(3600.0, backend.set_available, pool.id, 0.5)  # 2 nodes from 1 h
    clock.at(7200.0, backend.set_down, "gcp", True)  # nothing from 2 h
    clock.at(9000.0, backend.set_down, "gcp", False)  # 2 nodes again from 2.5 h
    clock.run_until(20000.0)
    usable = backend.state[pool.id].usable_node_seconds(np.array([0.0, 3600.0, 7200.0, 10800.0]))
    assert usable.tolist() == [4 * 3600.0, 2 * 3600.0, 2 * 1800.0]


def test_on_demand_usable_capacity_ignores_stock_outs_running_instances_survive_them():
    clock, pool, backend = make(purchase=Purchase.ON_DEMAND, nodes=4)
    clock.at(3600.0, backend.set_available, pool.id, 0.0)
    clock.run_until(7200.0)
    usable = backend.state[pool.id].usable_node_seconds(np.array([0.0, 3600.0, 7200.0]))
    assert usable.tolist() == [4 * 3600.0, 4 * 3600.0]
