"""Test harness for the Kubernetes backend: a fake kube-apiserver (HTTP, the official client talks to it)
with a fake control plane and kubelets that run every pod as real local processes."""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from overcast.backends.base import BackendEvent, EventKind, LaunchRequest
from overcast.backends.kubernetes import KubeCluster, KubernetesBackend
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources
from tests.fixtures.k8s_apiserver import FakeApiServer, KubeStore
from tests.fixtures.k8s_kubelet import FakeCluster

WAIT_S = 15.0  # every wait is bounded


@dataclasses.dataclass
class K8s:
    store: KubeStore
    server: FakeApiServer
    cluster: FakeCluster
    home: Path

    @property
    def url(self) -> str:
        return self.server.url

    def settings(self, name: str = "lab", **kw: Any) -> KubeCluster:
        base: dict[str, Any] = dict(
            name=name,
            api=self.url,
            nodes=2,
            gpus_per_node=8,
            accelerator="H100",
            price_per_node_hour=8.0,
            logs_dir=str(self.home / "logs"),
            schedule_timeout_s=5.0,
            lost_after_s=1.0,
            down_retry_s=0.2,
        )
        return KubeCluster(**(base | kw))

    def backend(self, **kw: Any) -> KubernetesBackend:
        return KubernetesBackend(self.settings(**kw))

    def objects(self, resource: str, namespace: str = "default") -> list[dict[str, Any]]:
        with self.store.lock:
            return copy.deepcopy(self.store.list(resource, namespace))

    def foreign_pod(self, namespace: str, gpus: int, node: str) -> None:
        """Another team's pod holding ``gpus`` GPUs of ``node`` (a real ``sleep``)."""
        self.store.namespaces.add(namespace)
        pod = {
            "metadata": {"name": f"other-{node}"},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "restartPolicy": "Never",
                "containers": [
                    {
                        "name": "c",
                        "image": "x",
                        "command": ["sleep", "60"],
                        "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                    }
                ],
            },
            "status": {"phase": "Pending"},
        }
        self.store.create("pods", namespace, pod)
        wait_until(lambda: any(p["status"].get("phase") == "Running" for p in self.cluster.pods(namespace)))


@pytest.fixture
def k8s(tmp_path: Path) -> Iterator[K8s]:
    """A two-node cluster (8 H100 each) behind a fake API server."""
    store = KubeStore()
    with FakeApiServer(store) as server:
        cluster = FakeCluster(store, tmp_path / "k8s").start()
        try:
            cluster.add_node("node-a")
            cluster.add_node("node-b")
            yield K8s(store, server, cluster, tmp_path)
        finally:
            cluster.close()


def gpu_spec(name: str, run: str, nodes: int = 2, **fields: Any) -> JobSpec:
    gpus = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, num_nodes=nodes, run=run, resources=gpus, **fields)


def request(
    backend: KubernetesBackend, job_id: str, attempt: int, spec: JobSpec, **env: str
) -> LaunchRequest:
    (pool,) = backend.pools()
    return LaunchRequest(job_id, attempt, pool, spec.num_nodes, spec, dict(env))


def wait_until(done: Callable[[], bool], timeout: float = WAIT_S, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not true within {timeout}s")


class Events:
    """Polls a backend and keeps every event."""

    def __init__(self, backend: KubernetesBackend) -> None:
        self.backend = backend
        self.seen: list[BackendEvent] = []

    def wait(self, kind: EventKind, job_id: str, attempt: int = 1, timeout: float = WAIT_S) -> BackendEvent:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.seen += self.backend.poll()
            for e in self.seen:
                if (e.kind, e.job_id, e.attempt) == (kind, job_id, attempt):
                    return e
            time.sleep(0.05)
        raise AssertionError(f"no {kind} for {job_id}/{attempt} within {timeout}s; saw {self.seen}")

    def kinds(self, job_id: str) -> list[EventKind]:
        return [e.kind for e in self.seen if e.job_id == job_id]
