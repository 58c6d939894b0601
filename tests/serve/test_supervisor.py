"""The server's services (ServiceSupervisor) over a real store and real replica processes: a stored service
runs; a server restart adopts its replicas; a changed spec in the store is rolled out; a delete stops it."""

from __future__ import annotations

import sys
import threading

import httpx

from overcast.backends.local import LocalBackend
from overcast.serve.ledger import parse_replica_job_id
from overcast.serve.supervisor import ServiceSupervisor
from overcast.spec.models import Autoscaling, ReadinessProbe, ServiceSpec
from overcast.store import Store
from tests.serve.replica_procs import MODEL_SERVER
from tests.serve.test_adoption import CLUSTERS, stop_leftovers, wait_for


def spec(min_replicas: int, env: dict[str, str] | None = None) -> ServiceSpec:
    return ServiceSpec(
        name="llm",
        run=f"exec {sys.executable} {MODEL_SERVER} --port $OVERCAST_REPLICA_PORT --warmup 0.2",
        env=env or {},
        readiness_probe=ReadinessProbe(path="/health", initial_delay_seconds=0.1, timeout_seconds=1.0),
        replicas=Autoscaling(min_replicas=min_replicas),
        max_share_per_provider=0.5,
    )


class Server:
    """A supervisor thread over fresh backend objects, as one `overcast up` process runs it."""

    def __init__(self, store: Store, home, backends: list | None = None, stop_retry: float = 10.0) -> None:
        backends = backends if backends is not None else [LocalBackend(c, home=home) for c in CLUSTERS]
        self.supervisor = ServiceSupervisor(store, backends, home, interval=0.2, stop_retry=stop_retry)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.supervisor.run, args=(self.stop, 0.2), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def replicas_of(home, service_id: str, clusters=CLUSTERS) -> set[str]:
    found = set()
    for cluster in clusters:
        for job_id, _ in LocalBackend(cluster, home=home).active():
            parsed = parse_replica_job_id(job_id)
            if parsed and parsed[0] == service_id:
                found.add(job_id)
    return found


def test_stored_services_run_survive_a_server_restart_roll_and_delete(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'overcast.db'}")
    home = tmp_path / "serve"
    ml, _ = store.put_service("ml", spec(2))
    vision, _ = store.put_service("vision", spec(1))  # same name, another team: another service
    server = Server(store, home)
    try:

        def ready(sid: str, n: int, version: int = 1) -> dict | None:
            status = store.service(sid).status
            replicas = status.get("replicas", [])
            done = status.get("ready") == n and len(replicas) == n
            return status if done and {r["version"] for r in replicas} == {version} else None

        before = wait_for(lambda: ready(ml.id, 2), 30, "ml's 2 replicas")
        wait_for(lambda: ready(vision.id, 1), 30, "vision's replica")
        assert len(replicas_of(home, ml.id)) == 2 and len(replicas_of(home, vision.id)) == 1
        assert httpx.post(before["url"] + "/generate", json={"prompt": "x"}, timeout=5).status_code == 200

        server.close()  # the server stops (or dies): its services' replicas keep running
        launches = replicas_of(home, ml.id)
        for replica in before["replicas"]:
            assert httpx.get(replica["url"] + "/health", timeout=2).status_code == 200
        server = Server(store, home)
        after = wait_for(
            lambda: (s := ready(ml.id, 2)) and s["at"] > before["at"] and s, 30, "the restarted server"
        )
        assert [r["id"] for r in after["replicas"]] == [r["id"] for r in before["replicas"]]
        assert after["url"] == before["url"]  # the load balancer comes back on its port
        assert replicas_of(home, ml.id) == launches  # adopted, none launched again
        assert httpx.post(after["url"] + "/generate", json={"prompt": "x"}, timeout=5).status_code == 200

        changed, _ = store.put_service("ml", spec(2, {"MODEL": "v2"}))
        assert changed.version == 2
        rolled = wait_for(lambda: ready(ml.id, 2, version=2), 30, "the rolling update")
        assert not {r["id"] for r in rolled["replicas"]} & {r["id"] for r in before["replicas"]}

        store.request_service_delete(ml.id)
        wait_for(lambda: store.service(ml.id) is None, 30, "the deleted service to go")
        assert replicas_of(home, ml.id) == set()
        assert len(replicas_of(home, vision.id)) == 1  # the other team's service is untouched
    finally:
        server.close()
        stop_leftovers(home, CLUSTERS)
        store.close()
