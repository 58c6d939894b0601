"""The local backend: each node of a job is a real process group on this machine.

A local provider (``azure-local``, ``oci-local``...) is a named set of nodes with GPU slots and a price;
several can run side by side, each as its own backend ``local:<name>`` with one pool ``local/<name>``.
Backend objects over the same folder share its nodes: each counts and avoids every launch there, and
one given ``owns`` reports (poll, active) and cleans up only its own (``local_share.py``: the job loop's
and the services' sides of one provider under ``overcast up``).

All state lives on disk under ``$OVERCAST_HOME/local/<name>/`` so a backend started after a crash knows
what runs (``active()`` tells the truth):

    launches/<job>--<attempt>/launch.json   nodes given to the launch, written before any process starts
    launches/<job>--<attempt>/node-R.pid    runner pid + start time (tells a pid from its reuse)
    launches/<job>--<attempt>/node-R.exit   exit status and end time, written by the runner when it ends
    launches/<job>--<attempt>/node-R.killed preempt() killed the node before it wrote its exit (mtime: when)
    launches/<job>--<attempt>/stopped       the control loop stopped it: no more events, and a node
                                            still starting sees it and does not run
    launches/<job>--<attempt>/provider-down set_down() killed it (mtime: when)
    launches/<job>--<attempt>/reported      its terminal event was delivered (and acknowledged)
    faults.json                             injected faults: provider down, out of capacity
    nodes.lock                              held while a launch checks faults, picks its nodes and starts
                                            them, and while set_down() kills (flock)

Events are acknowledged implicitly: ``poll()`` first records the events it returned last time (the loop
has handled them by then), so a loop that crashes while handling events sees them again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from overcast.backends import local_runner
from overcast.backends.base import (
    Allocation,
    BackendEvent,
    CapacityError,
    EventKind,
    LaunchRequest,
    ProviderDown,
    inherited_environ,
)
from overcast.backends.local_faults import LocalFaults, read_json
from overcast.backends.local_procs import alive, file_lock, real_gpu_count, terminate_groups
from overcast.backends.local_runner import process_start_time, write_json_atomic
from overcast.placement.pool import Health, Pool, Purchase
from overcast.store.engine import overcast_home

STARTING_SECONDS = 5.0  # a node with no pid file yet is still starting for this long (crash mid-launch)


@dataclass(frozen=True, slots=True)
class LocalCluster:
    """One local provider: ``nodes`` nodes of ``gpus_per_node`` GPU slots each."""

    name: str
    nodes: int = 2
    gpus_per_node: int = 1
    accelerator: str = "H100"
    price_per_node_hour: float = 1.0
    purchase: Purchase = Purchase.ON_DEMAND
    region: str = "local"
    provider: str | None = None  # default: the cluster name


@dataclass(frozen=True, slots=True)
class _Launch:
    job_id: str
    attempt: int
    path: Path
    node_ids: tuple[int, ...]
    created_at: float

    @property
    def num_nodes(self) -> int:
        return len(self.node_ids)


def visible_devices(node_id: int, gpus_per_node: int, real_gpus: int) -> str:
    """CUDA_VISIBLE_DEVICES of a local node: its slots, mapped round-robin onto the machine's real GPUs
    when there are any (so a laptop with 1 GPU can host a fleet of 8-GPU nodes), else fake slot ids."""
    slots = range(node_id * gpus_per_node, (node_id + 1) * gpus_per_node)
    return ",".join(str(slot % real_gpus if real_gpus else slot) for slot in slots)


class LocalBackend(LocalFaults):
    """Backend protocol for one local provider, plus fault injection (``local_faults.py``)."""

    def __init__(
        self, cluster: LocalCluster, home: Path | None = None, head_addr: str = "127.0.0.1",
        owns: Callable[[str], bool] | None = None,
    ) -> None:  # fmt: skip
        """``owns``: the job ids whose launches this object reports and cleans up (None: all)."""
        if cluster.nodes < 1 or cluster.gpus_per_node < 0:
            raise ValueError(f"local cluster {cluster.name!r}: needs nodes >= 1 and gpus_per_node >= 0")
        self.cluster = cluster
        self.name = f"local:{cluster.name}"
        self.pool_id = f"local/{cluster.name}"
        self.home = home or overcast_home()
        self.dir = self.home / "local" / cluster.name
        self.launches_dir = self.dir / "launches"
        self.launches_dir.mkdir(parents=True, exist_ok=True)
        self.head_addr = head_addr
        self.owns = owns
        self._lock = threading.RLock()
        self._children: dict[Path, list[subprocess.Popen]] = {}
        self._unacked: list[Path] = []

    # -- the Backend protocol -----------------------------------------------------------------------

    def pools(self) -> list[Pool]:
        with self._lock:
            used = sum(launch.num_nodes for launch in self._launches() if self._live_nodes(launch))
            down = self.faults()["down"]
        c = self.cluster
        return [
            Pool(
                id=self.pool_id,
                provider=c.provider or c.name,
                region=c.region,
                zone=None,
                instance_type=f"local-{c.gpus_per_node}x{c.accelerator}" if c.gpus_per_node else "local-cpu",
                accelerator=c.accelerator if c.gpus_per_node else "",
                gpus_per_node=c.gpus_per_node,
                purchase=c.purchase,
                price_per_node_hour=c.price_per_node_hour,
                capacity_nodes=c.nodes,
                used_nodes=min(used, c.nodes),
                backend=self.name,
                health=Health.DOWN if down else Health.OK,
                labels={"local": "true"},
            )
        ]

    def launch(self, request: LaunchRequest) -> Allocation:
        if request.pool.id != self.pool_id:
            raise ValueError(f"pool {request.pool.id} does not belong to backend {self.name}")
        # The folder's lock, not just this object's, is held from the fault check until the processes
        # exist: a set_down() on another object over these nodes (the other side of a shared provider)
        # either comes first, and this launch is refused, or after, and finds the nodes to kill. Starting
        # a node is a fork and exec, so that lock stays short. A failed start is undone after it is
        # released (the undo waits on processes), but still under this object's lock, so this object's
        # poll never reports the half-started launch as started.
        with self._lock:
            with file_lock(self._nodes_lock):
                path, node_ids, failed = self._start_locked(request)
            if failed is not None:  # all nodes or none: undo what started
                pgids = [p["pid"] for r in range(len(node_ids)) if (p := read_json(path / f"node-{r}.pid"))]
                terminate_groups(pgids, 0.0, reap=self._children.pop(path, []))
                shutil.rmtree(path, ignore_errors=True)
                raise RuntimeError(f"could not start job {request.job_id}: {failed}") from failed
        return self._allocation(request.job_id, request.attempt, path)

    def _start_locked(self, request: LaunchRequest) -> tuple[Path, tuple[int, ...], Exception | None]:
        """Under both locks: refuse on faults or too few free nodes, else record and start the nodes."""
        faults = self.faults()
        if faults["down"]:
            raise ProviderDown(f"{self.cluster.name} is down")
        if faults["capacity"]:
            raise CapacityError(f"{self.cluster.name}: out of capacity")
        path = self.launches_dir / f"{request.job_id}--{request.attempt}"
        if path.exists():  # the same attempt again (a retried apply): launching is idempotent
            launch = read_json(path / "launch.json") or {}
            return path, tuple(launch.get("node_ids", ())), None
        free = self._free_node_ids()  # another object over these nodes picks after us
        if len(free) < request.num_nodes:
            raise CapacityError(f"{self.cluster.name}: {len(free)} free nodes, {request.num_nodes} requested")
        node_ids = tuple(free[: request.num_nodes])
        path.mkdir(parents=True)
        info = {"job_id": request.job_id, "attempt": request.attempt, "node_ids": list(node_ids)}
        write_json_atomic(path / "launch.json", info | {"created_at": time.time()})
        try:
            self._start_nodes(request, path, node_ids)
        except Exception as exc:
            return path, node_ids, exc
        return path, node_ids, None

    def stop(self, job_id: str, attempt: int, grace_seconds: float) -> None:
        with self._lock:
            path = self.launches_dir / f"{job_id}--{attempt}"
            launch = self._load(path)
            if launch is None:
                return
            (path / "stopped").touch()
            pgids = self._running_pgids(launch)
            children = self._children.get(path, [])
        terminate_groups(pgids, grace_seconds, reap=children)

    def poll(self) -> list[BackendEvent]:
        with self._lock:
            for marker in self._unacked:
                if marker.parent.exists():
                    marker.touch()
            self._unacked = []
            events = []
            for launch in self._own():
                running = bool(self._live_nodes(launch))
                if self._stopped(launch) or (launch.path / "reported").exists():
                    if not running:
                        self._forget(launch)
                    continue
                event = self._terminal_event(launch)
                if event is not None:
                    events.append(event)
                    self._unacked.append(launch.path / "reported")
                elif not (launch.path / "started").exists():
                    events.append(BackendEvent(EventKind.STARTED, launch.job_id, launch.attempt, time.time()))
                    self._unacked.append(launch.path / "started")
            return events

    def active(self) -> list[tuple[str, int]]:
        """Launches with a live process, and ended ones whose outcome has not been delivered yet:
        the backend still knows them (their event comes with the next poll), so they are not lost."""
        with self._lock:
            return [
                (launch.job_id, launch.attempt)
                for launch in self._own()
                if self._live_nodes(launch)
                or not (self._stopped(launch) or (launch.path / "reported").exists())
            ]

    def address(self, job_id: str, attempt: int) -> str | None:
        """Every node is a process on this host (``Addressed``: where a service's replica is reached)."""
        return self.head_addr

    def redeliver(self) -> None:
        """The caller could not handle the last poll's events: the next poll reports them again."""
        with self._lock:
            self._unacked = []

    # -- internals ----------------------------------------------------------------------------------

    def _allocation(self, job_id: str, attempt: int, path: Path) -> Allocation:
        return Allocation(job_id, attempt, self.name, handle=str(path))

    def _start_nodes(self, request: LaunchRequest, path: Path, node_ids: tuple[int, ...]) -> None:
        spec = request.spec
        script = path / "node.sh"
        setup = f"set -e\n{spec.setup}\nset +e\n" if spec.setup else ""  # setup stops at its first failure
        script.write_text(setup + (spec.run or "true") + "\n")
        log_dir = self.home / "logs" / request.job_id / str(request.attempt)
        log_dir.mkdir(parents=True, exist_ok=True)
        cwd = os.path.expanduser(spec.workdir) if spec.workdir else None
        children = self._children.setdefault(path, [])
        # The server's Python comes first on PATH, so `python train.py` finds the same packages.
        search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
        for rank, node_id in enumerate(node_ids):
            env = inherited_environ() | {"PATH": search} | spec.env | request.env
            env |= {
                "OVERCAST_NUM_NODES": str(request.num_nodes),
                "OVERCAST_NODE_RANK": str(rank),
                "OVERCAST_HEAD_ADDR": self.head_addr,
                "CUDA_VISIBLE_DEVICES": self._visible_devices(node_id),
            }
            prefix = path / f"node-{rank}"
            runner = [sys.executable, local_runner.__file__, str(prefix), "--", "bash", str(script)]
            with open(log_dir / f"node-{rank}.log", "ab") as log:
                proc = subprocess.Popen(
                    runner, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=True, env=env, cwd=cwd,
                )  # fmt: skip
            children.append(proc)
            pid_info = {"pid": proc.pid, "start": process_start_time(proc.pid)}
            write_json_atomic(prefix.with_suffix(".pid"), pid_info)

    def _visible_devices(self, node_id: int) -> str:
        return visible_devices(node_id, self.cluster.gpus_per_node, real_gpu_count())

    def _load(self, path: Path) -> _Launch | None:
        info = read_json(path / "launch.json")
        if info is None:
            return None
        return _Launch(info["job_id"], info["attempt"], path, tuple(info["node_ids"]), info["created_at"])

    def _launches(self) -> list[_Launch]:
        found = (self._load(path) for path in sorted(self.launches_dir.iterdir()) if path.is_dir())
        return [launch for launch in found if launch is not None]

    def _own(self) -> list[_Launch]:
        """The launches this object reports; the others' only count as used nodes."""
        owns = self.owns
        return [launch for launch in self._launches() if owns is None or owns(launch.job_id)]

    def _stopped(self, launch: _Launch) -> bool:
        return (launch.path / "stopped").exists()

    def _node_state(self, launch: _Launch, rank: int) -> tuple[str, dict | None]:
        """("running" | "exited" | "lost", exit info)."""
        for proc in self._children.get(launch.path, []):
            proc.poll()  # reap our own children
        pid = read_json(launch.path / f"node-{rank}.pid")
        if pid is not None and alive(pid["pid"], pid.get("start")):
            return "running", None
        exit_info = read_json(launch.path / f"node-{rank}.exit")
        if exit_info is not None:
            return "exited", exit_info
        if pid is None and time.time() - launch.created_at < STARTING_SECONDS:
            return "running", None
        return "lost", None

    def _live_nodes(self, launch: _Launch) -> dict[int, int | None]:
        """rank -> process group id of every node still running (None: still starting, nothing to signal)."""
        live = {}
        for rank in range(launch.num_nodes):
            if self._node_state(launch, rank)[0] == "running":
                pid = read_json(launch.path / f"node-{rank}.pid")
                live[rank] = None if pid is None else pid["pid"]
        return live

    def _running_pgids(self, launch: _Launch) -> list[int]:
        return [pgid for pgid in self._live_nodes(launch).values() if pgid is not None]

    def _free_node_ids(self) -> list[int]:
        busy = {n for launch in self._launches() if self._live_nodes(launch) for n in launch.node_ids}
        return [n for n in range(self.cluster.nodes) if n not in busy]

    def _ended_at(self, launch: _Launch, states: list[tuple[str, dict | None]]) -> float:
        """When the nodes stopped (billed to that, however late we poll): the last exit; a node killed with no
        exit file: when set_down()/preempt() killed it, else when found gone. Now while any node runs."""
        now, ends = time.time(), []
        for rank, (state, info) in enumerate(states):
            markers = [launch.path / f"node-{rank}.exit"] if state == "exited" else []
            markers += [launch.path / "provider-down", launch.path / f"node-{rank}.killed"]
            stamps = [m.stat().st_mtime for m in markers if state != "running" and m.exists()]
            if not stamps:
                return now
            ends.append((info or {}).get("ended_at") or stamps[0])  # a runner older than ended_at: mtime
        return min(max(ends), now)

    def _terminal_event(self, launch: _Launch) -> BackendEvent | None:
        states = [self._node_state(launch, rank) for rank in range(launch.num_nodes)]
        at = self._ended_at(launch, states)
        lost = [rank for rank, (state, _) in enumerate(states) if state == "lost"]
        if lost:
            down = (launch.path / "provider-down").exists()
            kind = EventKind.PROVIDER_DOWN if down else EventKind.PREEMPTED
            why = f"{self.cluster.name} went down" if down else f"node {lost[0]} lost"
            return BackendEvent(kind, launch.job_id, launch.attempt, at, why)
        ended = [(rank, info) for rank, (state, info) in enumerate(states) if state == "exited" and info]
        for rank, info in ended:
            if info["code"] != 0 and info.get("sigterm"):
                why = f"node {rank} terminated (SIGTERM), exit {info['code']}"
                return BackendEvent(EventKind.PREEMPTED, launch.job_id, launch.attempt, at, why)
        for rank, info in ended:
            if info["code"] != 0:
                why = f"node {rank} exited with {info['code']}"
                return BackendEvent(EventKind.FAILED, launch.job_id, launch.attempt, at, why, info["code"])
        if len(ended) == launch.num_nodes:
            return BackendEvent(EventKind.SUCCEEDED, launch.job_id, launch.attempt, at, "", 0)
        return None

    def _forget(self, launch: _Launch) -> None:
        self._children.pop(launch.path, None)
        shutil.rmtree(launch.path, ignore_errors=True)
