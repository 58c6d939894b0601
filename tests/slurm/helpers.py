"""Builders for Slurm backend tests: specs running the example trainer, launch requests, event waits."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from overcast.backends.base import BackendEvent, EventKind, LaunchRequest
from overcast.backends.slurm import SlurmBackend
from overcast.backends.slurm_cli import SlurmUnreachable
from overcast.placement.pool import Pool
from overcast.spec.models import AcceleratorRequest, JobSpec, Resources

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "train" / "train.py"


def train_spec(
    name: str, nodes: int, ckpt: Path | None, steps: int = 100, step_seconds: float = 0.02
) -> JobSpec:
    """A job running the example checkpointing trainer on ``nodes`` nodes x 8 H100."""
    args = f"--steps {steps} --step-seconds {step_seconds} --checkpoint-every 10"
    return JobSpec(
        name=name,
        num_nodes=nodes,
        run=f"{sys.executable} {TRAIN} {args}",
        checkpoint_dir=str(ckpt) if ckpt else None,  # None: the control loop picks one
        resources=Resources(accelerators=(AcceleratorRequest(name="H100", count=8),)),
    )


def shell_spec(name: str, run: str, nodes: int = 1) -> JobSpec:
    gpus = Resources(accelerators=(AcceleratorRequest(name="H100", count=8),))
    return JobSpec(name=name, num_nodes=nodes, run=run, resources=gpus)


def reference_result(tmp: Path, steps: int) -> str:
    """The uninterrupted run's RESULT line (the trainer is deterministic across resumes)."""
    args = ["--steps", str(steps), "--step-seconds", "0", "--checkpoint-dir", str(tmp)]
    out = subprocess.run([sys.executable, str(TRAIN), *args], capture_output=True, text=True, timeout=60)
    return next(line for line in out.stdout.splitlines() if line.startswith("RESULT"))


def pool_of(backend: SlurmBackend) -> Pool:
    (pool,) = backend.pools()
    return pool


def request(backend: SlurmBackend, job_id: str, attempt: int, spec: JobSpec) -> LaunchRequest:
    return LaunchRequest(job_id, attempt, pool_of(backend), spec.num_nodes, spec)


class Events:
    """Polls backends and keeps every event, so a test can wait for one and look at the rest."""

    def __init__(self, backends: Iterable[SlurmBackend]) -> None:
        self.backends = list(backends)
        self.seen: list[BackendEvent] = []

    def poll(self) -> list[BackendEvent]:
        new = [e for b in self.backends for e in b.poll()]
        self.seen.extend(new)
        return new

    def wait(self, kind: EventKind, job_id: str, attempt: int, timeout: float = 30.0) -> BackendEvent:
        def found() -> BackendEvent | None:
            return next(
                (e for e in self.seen if (e.kind, e.job_id, e.attempt) == (kind, job_id, attempt)), None
            )

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.poll()
            event = found()
            if event is not None:
                return event
            time.sleep(0.1)
        raise AssertionError(f"no {kind} for {job_id}/{attempt} within {timeout}s; saw {self.seen}")

    def kinds(self, job_id: str) -> list[tuple[EventKind, int]]:
        return [(e.kind, e.attempt) for e in self.seen if e.job_id == job_id]


def wait_until(done: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not true within {timeout}s")


def node_log(backend: SlurmBackend, job_id: str, attempt: int, rank: int) -> str:
    path = backend.log_path(job_id, attempt, rank)
    return path.read_text() if path.exists() else ""


class MemoryQueue:
    """What the backend asks Slurm, answered from a list of job records."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.down = False
        self.cancelled: list[int] = []
        self.accounting: dict[int, dict[str, Any]] = {}  # slurmdbd: the last record it got of each job

    def squeue(self) -> list[dict[str, Any]]:
        if self.down:
            raise SlurmUnreachable("connection refused")
        self.accounting |= {j["job_id"]: dict(j) for j in self.jobs}
        return [dict(j) for j in self.jobs]

    def sacct(self, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        if self.down:
            raise SlurmUnreachable("connection refused")
        return {i: dict(self.accounting[i]) for i in job_ids if i in self.accounting}

    squeue_text = squeue

    def job_state(self, job_id: int) -> str | None:
        return next((j["job_state"] for j in self.squeue() if j["job_id"] == job_id), None)

    def scancel(self, job_ids: list[int], signal: str | None = None, full: bool = False) -> None:
        if self.down:
            raise SlurmUnreachable("connection refused")
        if signal is None:
            self.cancelled.extend(job_ids)
            for job in self.jobs:
                if job["job_id"] in job_ids and job["job_state"] in ("PENDING", "RUNNING", "COMPLETING"):
                    job |= {"job_state": "CANCELLED", "state_reason": "None"}
