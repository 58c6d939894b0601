"""The Nebius backend's poll clean-up against the fake (tests/fixtures/nebius_fake.py): an outage while
it deletes one gang's instances must not lose another gang's outcome, and a GPU cluster whose gang the
local state forgot (a lost acked.json) is found by its labels and deleted."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from overcast.backends.base import EventKind, LaunchRequest, ProviderDown
from overcast.placement.pool import Pool
from overcast.spec.models import JobSpec
from tests.backends.cloud_checks import eventually, wait_events
from tests.backends.nebius_vm import NebiusVmHost
from tests.backends.test_nebius import (  # noqa: F401  (vms: the fixture)
    H100_1,
    all_gone,
    backend_for,
    gpu_job,
    labels,
    poll_until,
    pool_of,
    vms,
)
from tests.fixtures.nebius_fake import FakeNebius, nebius_fake, nebius_server  # noqa: F401


def failing(owner: object, attribute: str, operation: str) -> Any:
    """Patch ``owner.attribute`` (a backend's ``call(operation, ...)``) so that ``operation`` meets an
    outage (UNAVAILABLE, DEADLINE_EXCEEDED, a 5xx: ProviderDown) and every other call goes through."""
    real = getattr(owner, attribute)

    def call(*args: Any, **kw: Any) -> Any:
        if operation in args:
            raise ProviderDown(f"{operation}: UNAVAILABLE: try again")
        return real(*args, **kw)

    return mock.patch.object(owner, attribute, call)


def an_outcome_outlives_an_outage_in_the_clean_up(
    backend: Any, pool: Pool, job: Callable[[str, str, int], JobSpec], flag: Path, outage: Any
) -> None:
    """Gang a waits for ``flag``, gang b ends at once and is reported; then, with deletes failing, a ends:
    the poll computes a's outcome, then b's clean-up meets the outage. a's outcome must come out of a
    poll: a ProviderDown escaping it would leave the outcome acknowledged but never delivered (the loop
    requeues a succeeded job)."""
    for name, run in (("a", f"until [ -e {flag} ]; do sleep 0.05; done"), ("b", "true")):
        backend.launch(LaunchRequest(name, 1, pool, 1, job(name, run, 1)))
    wanted = {("a", EventKind.STARTED), ("b", EventKind.SUCCEEDED)}  # a's STARTED first: no race with it
    wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events})
    seen: list = []

    def a_reported() -> bool:
        seen.extend(backend.poll())
        return any(e.job_id == "a" and e.kind is not EventKind.STARTED for e in seen)

    with outage:
        flag.touch()
        assert eventually(a_reported, 20)
        assert [(e.job_id, e.kind) for e in seen] == [("a", EventKind.SUCCEEDED)]


def test_an_outage_in_the_clean_up_does_not_lose_another_gangs_outcome(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    outage = failing(backend.api, "call", "delete instance")
    flag = tmp_path / "a-may-end"
    an_outcome_outlives_an_outage_in_the_clean_up(backend, pool_of(backend, H100_1), gpu_job, flag, outage)
    all_gone(backend, nebius_fake, vms)


def test_a_gpu_cluster_left_by_a_lost_local_state_is_swept_by_its_labels(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    backend = backend_for(nebius_fake, vms, tmp_path)
    # e's cluster is listed first and still busy when c's can go: the sweep must go on for e's
    backend.launch(LaunchRequest("e", 1, pool_of(backend), 2, gpu_job("e", "sleep 60")))
    backend.launch(LaunchRequest("c", 1, pool_of(backend), 2, gpu_job("c", "true")))
    poll_until(backend, {("c", EventKind.SUCCEEDED)})
    (backend.dir / "acked.json").unlink()  # the controller's disk is replaced: the API is the truth
    backend = backend_for(nebius_fake, vms, tmp_path)
    poll_until(backend, {("c", EventKind.SUCCEEDED)})  # replayed, as designed; then deleted
    assert eventually(lambda: backend.poll() == [] and len(nebius_fake.clusters) == 1, 10)  # c's
    backend.stop("e", 1, grace_seconds=0.0)
    all_gone(backend, nebius_fake, vms)  # e's GPU cluster too, found by its labels
    # another backend's cluster (another owner label) is left alone
    other = backend_for(nebius_fake, vms, tmp_path / "o", name="other")
    other.launch(LaunchRequest("d", 1, pool_of(other), 2, gpu_job("d", "sleep 30")))
    backend = backend_for(nebius_fake, vms, tmp_path / "fresh")
    backend.poll()
    assert len(nebius_fake.clusters) == 1
    other.stop("d", 1, grace_seconds=0.0)
    all_gone(other, nebius_fake, vms)


def test_a_poll_that_raises_in_a_clean_up_delivers_its_outcomes_on_the_next_poll(
    nebius_fake: FakeNebius,  # noqa: F811
    vms: NebiusVmHost,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Any error a clean-up lets through (not only an outage) leaves the outcomes that poll computed
    undelivered, not acknowledged: the next poll hands them over (cloud_backend.poll)."""
    backend = backend_for(nebius_fake, vms, tmp_path)
    pool, flag = pool_of(backend, H100_1), tmp_path / "a-may-end"
    for name, run in (("a", f"until [ -e {flag} ]; do sleep 0.05; done"), ("b", "true")):
        backend.launch(LaunchRequest(name, 1, pool, 1, gpu_job(name, run, 1)))
    wanted = {("a", EventKind.STARTED), ("b", EventKind.SUCCEEDED)}
    wait_events(backend, lambda events: wanted <= {(e.job_id, e.kind) for e in events})
    real, raised, listed = backend._clean_up, [], []

    def a_ended() -> bool:
        return any(g.job_id == "a" and g.terminal_event(time.time()) is not None for g in listed)

    def clean_up_once_broken(gang: Any, state: Any) -> None:
        if gang.job_id == "b" and not raised and a_ended():  # in the poll that computed a's outcome
            raised.append(gang.key)
            raise RuntimeError("a bug in a clean-up")
        real(gang, state)

    flag.touch()
    seen: list = []

    def a_reported() -> bool:
        with contextlib.suppress(RuntimeError):
            seen.extend(backend.poll())
        return any(e.job_id == "a" and e.kind is EventKind.SUCCEEDED for e in seen)

    gangs = backend._gangs  # a before b: a's outcome is computed, then b's clean-up raises

    def in_order(state: Any) -> list:
        listed[:] = sorted(gangs(state), key=lambda gang: gang.job_id)
        return listed

    with (
        mock.patch.object(backend, "_clean_up", clean_up_once_broken),
        mock.patch.object(backend, "_gangs", in_order),
    ):
        assert eventually(a_reported, 20)
    assert raised  # the broken clean-up did run
    all_gone(backend, nebius_fake, vms)
