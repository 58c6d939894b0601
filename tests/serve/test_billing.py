"""Service replicas billed like jobs, over a real store (SQLite and PostgreSQL) and real local replicas: a
service put through the API is billed to its team only, at its pools' terms; a scale-down ends the retired
replica's record; a restart adopts without a second record, and a replica lost while nobody watched ends
at the backend's time; the job loop's reconcile leaves replicas' records open; a deleted service whose
replica will not stop keeps its row and record until a later try stops it."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from overcast.backends.local import LocalBackend, LocalCluster
from overcast.control.reconcile import reconcile
from overcast.control.runtime import Runtime
from overcast.serve.controller import ServiceController
from overcast.serve.lb import LoadBalancer, RateMeter
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import LaunchTerms, Store
from overcast.store.tables import launches
from tests.api.conftest import Api, make_api
from tests.serve.replica_procs import MODEL_SERVER
from tests.serve.test_adoption import stop_leftovers, wait_for
from tests.serve.test_supervisor import Server
from tests.serve.test_supervisor import replicas_of as supervised_replicas

CLUSTERS = (  # two priced providers: a replica's record must carry its own pool's terms
    LocalCluster("oci-local", nodes=4, gpus_per_node=8, price_per_node_hour=30.0),
    LocalCluster("azure-local", nodes=4, gpus_per_node=4, accelerator="A100", price_per_node_hour=12.0),
)
YAML = f"""\
kind: service
name: llm
service:
  readiness_probe: {{path: /health, initial_delay_seconds: 0.1, timeout_seconds: 1.0}}
  replicas: REPLICAS
  max_share_per_provider: 0.5
run: exec {sys.executable} {MODEL_SERVER} --port $OVERCAST_REPLICA_PORT --warmup 0.2
"""


def records(store: Store) -> dict[str, Any]:
    """job id -> launch row (attempt 1: a replica has no other)."""
    with store.engine.connect() as conn:
        return {row.job_id: row for row in conn.execute(select(launches))}


def replicas_of(home: Path, service_id: str) -> set[str]:
    return supervised_replicas(home, service_id, CLUSTERS)


@pytest.fixture
def api(store_url: str, tmp_path: Path) -> Iterator[Api]:
    yield from make_api(store_url, tmp_path)


def test_replicas_of_a_service_put_through_the_api_are_billed_to_its_team_only(api: Api, tmp_path: Path):
    home = tmp_path / "serve"
    for team, n in (("ml", 2), ("vision", 1)):
        body = {"yaml": YAML.replace("REPLICAS", str(n))}
        assert api.client.post("/v1/services", json=body, headers=api.auth(team)).status_code == 201
    ml, vision = (api.store.services(team=t)[0] for t in ("ml", "vision"))
    server = Server(api.store, home, [LocalBackend(c, home=home) for c in CLUSTERS], stop_retry=0.5)
    try:
        for svc, n in ((ml, 2), (vision, 1)):
            wait_for(lambda s=svc, n=n: api.store.service(s.id).status.get("ready") == n, 30, f"{svc.team}")
        ml_ids, vision_ids = replicas_of(home, ml.id), replicas_of(home, vision.id)
        assert len(ml_ids) == 2 and len(vision_ids) == 1
        rows = records(api.store)
        assert set(rows) == ml_ids | vision_ids  # one record per replica launch, nothing else
        pools = {b.name: b.pools()[0] for b in (LocalBackend(c, home=home) for c in CLUSTERS)}
        for job_id, row in rows.items():
            pool = pools[row.backend]  # the terms frozen at launch are the replica's own pool's
            terms = LaunchTerms(row.provider, row.purchase, row.nodes, row.gpus_per_node, row.accelerator,
                                row.price_per_node_hour)  # fmt: skip
            assert terms == LaunchTerms(pool.provider, "on-demand", 1, pool.gpus_per_node, pool.accelerator,
                                        pool.price_per_node_hour), job_id  # fmt: skip
            assert row.team == ("ml" if job_id in ml_ids else "vision") and not row.ended and row.handle
        assert {rows[j].provider for j in ml_ids} == {"oci-local", "azure-local"}  # spread: both priced

        now = time.time()
        by_team = {r.key: r for r in api.store.usage(now - 60, now + 60).rows}
        assert set(by_team) == {"ml", "vision"}
        assert (by_team["ml"].launches, by_team["vision"].launches) == (2, 1)
        assert by_team["ml"].gpu_hours > 0 and by_team["ml"].dollars > 0
        # a team's token sees its own replicas, keyed by their launch ids, and not the other team's
        mine = api.client.get("/v1/usage", params={"by": "job"}, headers=api.auth("ml")).json()["rows"]
        assert {r["key"] for r in mine} == ml_ids
        theirs = api.client.get("/v1/usage", params={"by": "job"}, headers=api.auth("vision")).json()
        assert {r["key"] for r in theirs["rows"]} == vision_ids

        assert api.client.delete("/v1/services/llm", headers=api.auth("ml")).status_code == 202
        wait_for(lambda: api.store.service(ml.id) is None, 30, "ml's service to be deleted")
        rows = records(api.store)
        assert all(rows[j].ended and rows[j].outcome == "retired" for j in ml_ids)
        assert not rows[next(iter(vision_ids))].ended  # the other team's replica still runs and bills
    finally:
        server.close()
        stop_leftovers(home, CLUSTERS)


def autoscaled() -> ServiceSpec:
    """Never probed (a 60 s initial delay): the replicas stay launching, which is all billing needs."""
    return ServiceSpec(
        name="svc", team="ml", run="exec sleep 600",
        readiness_probe=ReadinessProbe(initial_delay_seconds=60),
        replicas=Autoscaling(min_replicas=1, max_replicas=2, target_rps_per_replica=1.0,
                             upscale_delay_seconds=0, downscale_delay_seconds=0),
    )  # fmt: skip


def test_a_replica_retired_by_a_scale_down_ends_its_record(store_url: str, tmp_path: Path):
    store = Store(store_url)
    backend = LocalBackend(CLUSTERS[0], home=tmp_path / "be")
    lb = LoadBalancer("svc")
    lb.rate = RateMeter(window_seconds=0.5)
    ctl = ServiceController(autoscaled(), [backend], lb, home=tmp_path, key="s-scaledown", store=store)
    try:
        ctl.tick()
        for _ in range(2):  # 4 requests/s against 1 per replica: the target goes to 2
            lb.rate.hit(time.time())
        ctl.tick()
        assert sorted(ctl.replicas) == ["r0", "r1"]
        assert [r.ended for r in records(store).values()] == [False, False]
        time.sleep(0.6)  # no load: back to 1
        ctl.tick()
        retired_at = time.time()
        [kept] = ctl.replicas
        gone = "r0" if kept == "r1" else "r1"
        rows = records(store)
        assert rows[f"svc.s-scaledown.{gone}"].ended and rows[f"svc.s-scaledown.{gone}"].outcome == "retired"
        assert retired_at - 1.0 < rows[f"svc.s-scaledown.{gone}"].ended_at <= retired_at
        assert not rows[f"svc.s-scaledown.{kept}"].ended
        assert [job_id for job_id, _ in backend.active()] == [f"svc.s-scaledown.{kept}"]
        ctl.shutdown()
        assert all(row.ended for row in records(store).values())
    finally:
        stop_leftovers(tmp_path / "be", CLUSTERS[:1])
        store.close()


def fixed(n: int) -> ServiceSpec:
    return ServiceSpec(name="svc", team="ml", run="exec sleep 600", replicas=Autoscaling(min_replicas=n),
                       readiness_probe=ReadinessProbe(initial_delay_seconds=60))  # fmt: skip


def restarted(store: Store, tmp_path: Path) -> ServiceController:
    """A new controller of the service over fresh backend objects, as a restarted server makes it."""
    backends = [LocalBackend(CLUSTERS[0], home=tmp_path / "be")]
    return ServiceController(
        fixed(3), backends, LoadBalancer("svc"), home=tmp_path, key="s-adopt", store=store
    )


def test_a_restart_adopts_without_a_second_record_and_ends_what_went_meanwhile(
    store_url: str, tmp_path: Path
):
    store = Store(store_url)
    backend = LocalBackend(CLUSTERS[0], home=tmp_path / "be")
    first = restarted(store, tmp_path)
    r0, r1, r2, r3, r4 = (f"svc.s-adopt.r{i}" for i in range(5))
    try:
        first.tick()
        before = records(store)
        assert sorted(before) == [r0, r1, r2]
        first.detach()  # the server goes away; its replicas keep running
        pid_file = tmp_path / "be"  # the runner's pid file: the replica has started and can be killed
        wait_for(lambda: list(pid_file.glob(f"**/{r1}--1/node-0.pid")), 10, "r1's process")
        backend.preempt(r1, notice_seconds=0.0)  # one dies while nobody watches: its end has a time
        died = time.time()
        backend.stop(r2, 1, 0.0)  # one is stopped behind overcast's back: the backend reports nothing
        time.sleep(1.0)  # the next controller comes a second later: r1's bill must not run to then

        second = restarted(store, tmp_path)
        second.tick()  # adopts r0 and r1, reads r1's end; r2 is gone; r3 and r4 replace them
        seen_gone = time.time()
        after = records(store)
        assert sorted(after) == [r0, r1, r2, r3, r4]
        assert not after[r0].ended and after[r0].launched_at == before[r0].launched_at  # not recorded again
        assert after[r1].outcome == "preempted" and died - 0.5 <= after[r1].ended_at <= died + 0.5
        assert after[r2].outcome == "gone" and died + 1.0 <= after[r2].ended_at <= seen_gone  # when seen
        assert not after[r3].ended and not after[r4].ended
        second.detach()
        third = restarted(store, tmp_path)
        third.tick()
        assert records(store) == after  # a second restart with nothing changed writes nothing
        third.shutdown()
        assert all(row.ended for row in records(store).values())
    finally:
        stop_leftovers(tmp_path / "be", CLUSTERS[:1])
        store.close()


def test_the_job_loops_reconcile_leaves_replicas_records_open(store_url: str, tmp_path: Path):
    store = Store(store_url)
    serving = LocalBackend(CLUSTERS[0], home=tmp_path / "serve")
    ctl = ServiceController(fixed(1), [serving], LoadBalancer("svc"), home=tmp_path, key="s-rec", store=store)
    try:
        ctl.tick()
        stale = LaunchTerms("oci", "on-demand", 1, 8, "H100", 30.0)  # a job's attempt nothing runs
        store.record_launch("j-gone", 1, "oci/r1", "local:jobs", "h", team="ml", terms=stale)
        jobs = LocalBackend(LocalCluster("jobs"), home=tmp_path / "jobs")
        for backends in ({jobs.name: jobs}, {jobs.name: jobs, serving.name: serving}):  # `up`, or shared
            reconcile(Runtime(store, backends, tmp_path))
            rows = records(store)
            assert rows["j-gone"].ended and rows["j-gone"].outcome == "stale"  # the reconcile did run
            assert not rows["svc.s-rec.r0"].ended
            assert serving.active() == [("svc.s-rec.r0", 1)]  # nor stopped it
        ctl.shutdown()
    finally:
        stop_leftovers(tmp_path / "serve", CLUSTERS[:1])
        store.close()


class StopFails:
    """The backend, but stop() raises while ``failing`` is set (a cloud API refusing the terminate)."""

    def __init__(self, real: LocalBackend) -> None:
        self.real, self.name, self.failing = real, real.name, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        if self.failing:
            raise OSError("terminate refused")
        self.real.stop(job_id, attempt, grace_seconds)


def test_a_deleted_services_replica_that_will_not_stop_is_stopped_by_a_later_try(
    store_url: str, tmp_path: Path
):
    store = Store(store_url)
    home = tmp_path / "serve"
    backend = StopFails(LocalBackend(CLUSTERS[0], home=home))
    svc, _ = store.put_service("ml", fixed(1))
    server = Server(store, home, [backend], stop_retry=0.5)
    try:
        wait_for(lambda: replicas_of(home, svc.id), 30, "the replica")
        [job_id] = replicas_of(home, svc.id)
        backend.failing = True
        store.request_service_delete(svc.id)
        time.sleep(2.0)  # several tries, every 0.5 s
        assert store.service(svc.id) is not None and store.service(svc.id).state == "deleting"
        assert replicas_of(home, svc.id) == {job_id} and not records(store)[job_id].ended
        backend.failing = False
        wait_for(lambda: store.service(svc.id) is None, 30, "the service to be deleted")
        assert replicas_of(home, svc.id) == set()
        assert records(store)[job_id].ended and records(store)[job_id].outcome == "retired"
    finally:
        server.close()
        stop_leftovers(home, CLUSTERS[:1])
        store.close()
